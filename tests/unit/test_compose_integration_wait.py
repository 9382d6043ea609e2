"""`pytest tests/integration/test_compose_stack.py --stack=compose` right after `up`: the test that
reads the marts waits for the first `cinema_elt` run instead of failing on a missing table."""

from __future__ import annotations

import pytest

from tests.integration import test_compose_stack as compose_checks
from tests.integration.test_compose_stack import DAG_RUNS, RUN_POLL_SECONDS, wait_for_a_successful_run


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def wait(answers: list[list[str]], timeout: float = 600.0) -> tuple[int, Clock]:
    clock = Clock()
    remaining = iter(answers)
    asked = 0

    def run_states() -> list[str]:
        nonlocal asked
        asked += 1
        return next(remaining)

    wait_for_a_successful_run(run_states, timeout, sleep=clock.sleep, clock=clock)
    return asked, clock


def test_it_waits_while_the_first_run_is_on_its_way() -> None:
    asked, clock = wait([["queued"], ["running"], ["running"], ["success"]])

    assert asked == 4
    assert clock.now == 3 * RUN_POLL_SECONDS


def test_an_older_success_is_enough() -> None:
    assert wait([["running", "success"]])[0] == 1


def test_it_skips_with_the_reason_when_no_run_was_started() -> None:
    with pytest.raises(pytest.skip.Exception, match="trigger one in the Airflow UI"):
        wait([[]])


def test_it_skips_when_the_run_does_not_finish_in_time() -> None:
    with pytest.raises(pytest.skip.Exception, match="within 30s"):
        wait([["running"]] * 10, timeout=30.0)


def test_it_fails_when_every_run_failed() -> None:
    with pytest.raises(pytest.fail.Exception, match="failed"):
        wait([["failed", "failed"]])


def test_the_marts_test_waits_and_asks_airflow_for_this_dags_runs() -> None:
    reads_the_marts = compose_checks.test_metabase_reads_the_marts_through_its_read_only_user
    marks = [mark.args for mark in getattr(reads_the_marts, "pytestmark", [])]

    assert ("marts_built",) in marks
    assert "/api/v2/dags/cinema_elt/dagRuns" in DAG_RUNS
