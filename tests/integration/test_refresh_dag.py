"""Real Airflow runs cinema_refresh once on the embedded stack (`airflow dags test`)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import pytest

from cinema import orchestrate
from cinema.live import REFRESHES
from cinema.names import MARTS_DATABASE
from cinema.warehouse import warehouse_client

pytestmark = pytest.mark.integration
EVENTS = 5_000


@pytest.fixture(scope="module")
def refreshed(stack, tmp_path_factory):
    own = stack.with_warehouse(tmp_path_factory.mktemp("refresh-dag") / "warehouse")
    own.cinema("generate", "--events", str(EVENTS), "--seed", "717171", "--users", "200")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in own.env.items():
            patch.setenv(name, value)
        orchestrate.parse_dbt_project(own.settings)
        orchestrate.migrate(own.settings)
        result = subprocess.run(
            [
                orchestrate.AIRFLOW,
                "dags",
                "test",
                "cinema_refresh",
                datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).isoformat(),
            ],
            env=orchestrate.airflow_environment(own.settings),
            cwd=orchestrate.PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return own, result.stdout + result.stderr


def test_both_tasks_succeed_in_order(refreshed):
    _, output = refreshed
    assert output.index("cinema load --until-caught-up") < output.index("cinema live --refresh-once")
    assert "marts refreshed in" in output
    assert "new_state=failed" not in output


def test_the_marts_hold_every_loaded_event_as_of_the_newest(refreshed):
    own, _ = refreshed
    with warehouse_client(own.settings) as client:
        # as_of is the newest receipt of a delivery that counts (an excluded one never sets it).
        raw_events, newest, watermark = client.query(
            "SELECT count(), "
            f"maxIf(received_at, id NOT IN (SELECT delivery_id FROM {MARTS_DATABASE}.excluded_events)), "
            "(SELECT max(watermark) FROM cinema_raw._loader_batches) "
            "FROM cinema_raw.viewing_events"
        ).result_rows[0]
        mart_events, as_of = client.query(
            f"SELECT sum(events + duplicate_deliveries), max(as_of) FROM {MARTS_DATABASE}.viewing_sessions"
        ).result_rows[0]
        # The shared stack holds other tests' implausible rows too: the marts leave them out
        # and list them in excluded_events, so raw = counted + excluded (as `cinema check` says).
        excluded = client.query(f"SELECT count() FROM {MARTS_DATABASE}.excluded_events").result_rows[0][0]
        refreshes = client.query(f"SELECT watermark, succeeded FROM {REFRESHES}").result_rows
    assert raw_events >= EVENTS
    assert mart_events + excluded == raw_events
    assert as_of == newest
    assert refreshes == [(watermark, True)]


def test_a_refresh_before_anything_was_loaded_says_what_to_run(stack, tmp_path):
    empty = stack.with_warehouse(tmp_path / "warehouse")
    result = empty.cinema("live", "--refresh-once", check=False)
    assert result.returncode == 1
    assert "nothing to refresh, the raw tables are missing: cinema_raw.movies" in result.stderr
    assert "`cinema load --until-caught-up`" in result.stderr
    assert "Traceback" not in result.stderr
