"""The one retry and poll helper: delays grow and cap, budgets end retries, a stop wakes a
wait at once, and a deadline raises (or returns) as documented. No services, a fake clock."""

from __future__ import annotations

import threading
import time

import pytest

from cinema.retrying import Backoff, poll, retry


class FakeClock:
    """A clock that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_delays_double_from_the_first_up_to_the_cap_and_start_over_after_a_reset() -> None:
    backoff = Backoff(0.5, 30.0)
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_a_time_budget_ends_the_delays_counted_from_the_first_failure() -> None:
    clock = FakeClock()
    backoff = Backoff(0.5, 30.0, budget_seconds=300.0, clock=clock)
    given = 0.0
    while (delay := backoff.next_delay()) is not None:
        given += delay
        clock.sleep(delay)
    assert 300.0 < given <= 330.0
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_retry_tries_again_after_retryable_failures_and_reports_each() -> None:
    clock = FakeClock()
    calls: list[int] = []
    reported: list[tuple[str, int, float]] = []

    def attempt() -> str:
        calls.append(len(calls))
        if len(calls) < 3:
            raise ConnectionError(f"refused {len(calls)}")
        return "answer"

    result = retry(
        attempt,
        retryable=lambda error: isinstance(error, ConnectionError),
        backoff=Backoff(0.5, 8.0, tries=4),
        on_retry=lambda error, failures, delay: reported.append((str(error), failures, delay)),
        sleep=clock.sleep,
    )
    assert result == "answer"
    assert reported == [("refused 1", 1, 0.5), ("refused 2", 2, 1.0)]
    assert clock.slept == [0.5, 1.0]


def test_retry_raises_the_last_failure_once_the_tries_are_spent() -> None:
    clock = FakeClock()
    calls = 0

    def attempt() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"refused {calls}")

    with pytest.raises(ConnectionError, match="refused 5"):
        retry(attempt, retryable=lambda _: True, backoff=Backoff(0.5, 8.0, tries=4), sleep=clock.sleep)
    assert calls == 5
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]


def test_retry_raises_a_failure_that_is_not_retryable_at_once() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="a bug"):
        retry(
            lambda: (_ for _ in ()).throw(ValueError("a bug")),
            retryable=lambda error: isinstance(error, ConnectionError),
            backoff=Backoff(0.5, 8.0, tries=4),
            sleep=clock.sleep,
        )
    assert clock.slept == []


def test_poll_returns_true_once_done_asking_every_interval() -> None:
    clock = FakeClock()
    answers = iter([False, False, True])
    assert poll(lambda: next(answers), timeout_seconds=60, interval=0.2, clock=clock, sleep=clock.sleep)
    assert clock.slept == [0.2, 0.2]


def test_a_deadline_raises_the_callers_error_after_a_last_question_at_the_deadline() -> None:
    clock = FakeClock()
    asked: list[float] = []

    def done() -> bool:
        asked.append(clock.now)
        return False

    with pytest.raises(TimeoutError, match="still not there"):
        poll(
            done,
            timeout_seconds=10,
            interval=Backoff(1.0, 4.0),
            timed_out=lambda: TimeoutError("still not there"),
            clock=clock,
            sleep=clock.sleep,
        )
    # 1, 2, 4, then the rest of the ten seconds: no wait runs past the deadline.
    assert clock.slept == [1.0, 2.0, 4.0, 3.0]
    assert asked[-1] == 1010.0


def test_a_deadline_without_an_error_returns_false() -> None:
    clock = FakeClock()
    assert not poll(lambda: False, timeout_seconds=0.05, interval=0.005, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(1000.05)


def test_a_stop_event_wakes_a_wait_at_once_and_poll_returns_false() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    began = time.monotonic()
    assert not poll(lambda: False, timeout_seconds=600, interval=300.0, stop=stop)
    assert time.monotonic() - began < 1.0


def test_a_stop_set_before_the_poll_asks_nothing() -> None:
    stop = threading.Event()
    stop.set()
    asked: list[bool] = []
    assert not poll(lambda: asked.append(True) or True, timeout_seconds=None, interval=1.0, stop=stop)
    assert asked == []
