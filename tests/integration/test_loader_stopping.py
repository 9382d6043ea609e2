"""Every wait on the loader's path wakes on the stop event: a drain waiting for a subscriber
that cannot catch up (its subscription disabled), `cinema load` receiving SIGTERM there, and
a loader waiting for an embedded warehouse another process holds."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cinema import db
from cinema.names import SUBSCRIPTION
from cinema.replication import wait_for_subscriber
from cinema.warehouse import lock_path
from loader import service
from loader.metrics import Metrics
from tests.integration.conftest import CINEMA, RunningStack
from tests.integration.test_loader import (
    ensure_own_reference_rows,
    insert_events,
    own_warehouse,
    publisher_transaction,
    wait_until,
)

pytestmark = pytest.mark.integration

# From the stop until the wait has returned: one poll interval and a connection's worth.
STOP_WITHIN_SECONDS = 2.0


@pytest.fixture
def subscription_disabled(stack: RunningStack) -> Iterator[None]:
    """The subscription paused with an event committed on the publisher: the subscriber
    cannot catch up until the fixture enables it again."""
    ensure_own_reference_rows(stack.settings)
    wait_for_subscriber(stack.settings, timeout_seconds=120)
    db.run_as_admin(stack.settings, "subscriber", f"ALTER SUBSCRIPTION {SUBSCRIPTION} DISABLE")
    try:
        with publisher_transaction(stack.settings) as connection, connection.cursor() as cursor:
            insert_events(cursor, 10)
            connection.commit()
        yield
    finally:
        db.run_as_admin(stack.settings, "subscriber", f"ALTER SUBSCRIPTION {SUBSCRIPTION} ENABLE")
        wait_for_subscriber(stack.settings, timeout_seconds=120)


def _stopped_within(thread: threading.Thread, stop: threading.Event) -> float:
    stop.set()
    began = time.monotonic()
    thread.join(30)
    assert not thread.is_alive()
    return time.monotonic() - began


def test_a_drain_waiting_for_the_subscriber_returns_as_soon_as_it_is_stopped(stack, tmp_path, subscription_disabled):
    own = own_warehouse(stack, tmp_path)
    stop = threading.Event()
    outcome: list[service.Summary] = []
    draining = threading.Thread(target=lambda: outcome.append(service.drain(own.settings, stop=stop)))
    draining.start()
    time.sleep(2)
    assert draining.is_alive(), "the drain did not wait for the subscriber"
    assert _stopped_within(draining, stop) < STOP_WITHIN_SECONDS
    assert outcome and not outcome[0].caught_up


def test_cinema_load_waiting_for_the_subscriber_exits_on_sigterm_at_once(stack, tmp_path, subscription_disabled):
    own = own_warehouse(stack, tmp_path)
    log_file = tmp_path / "load.log"
    with log_file.open("w") as output:
        process = subprocess.Popen(
            [CINEMA, "load", "--until-caught-up"], env=own.env, cwd=own.workdir, stdout=output, stderr=output
        )
    try:
        wait_until(lambda: "waiting for the subscriber" in log_file.read_text(), 60, "the drain to wait")
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = process.wait(30)
        seconds = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output_text = log_file.read_text()
    assert seconds < STOP_WITHIN_SECONDS, output_text
    assert code == 1, output_text
    assert "SIGTERM: finishing the current batch" in output_text
    assert "stopped before everything committed was loaded" in output_text
    assert "Traceback" not in output_text


def test_a_loader_waiting_for_a_held_warehouse_stops_at_once(stack, tmp_path):
    own = own_warehouse(stack, tmp_path)
    path: Path = lock_path(own.settings.warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Another process holds the embedded warehouse (flock, as `cinema load` takes it).
    holder = subprocess.Popen(["flock", str(path), "sleep", "120"])
    try:
        wait_until(lambda: _is_locked(path), 10, "the other process to take the lock")
        stop = threading.Event()
        outcome: list[service.Summary] = []
        errors: list[BaseException] = []

        def follow() -> None:
            try:
                outcome.append(service.run(own.settings, stop, target=None, metrics=Metrics()))
            except BaseException as error:
                errors.append(error)

        loading = threading.Thread(target=follow)
        loading.start()
        time.sleep(2)
        assert loading.is_alive(), errors
        assert _stopped_within(loading, stop) < STOP_WITHIN_SECONDS
        assert errors == []
        assert outcome[0].batches == 0 and outcome[0].watermark == 0
    finally:
        holder.kill()
        holder.wait()


def _is_locked(path: Path) -> bool:
    return subprocess.run(["flock", "--nonblock", str(path), "true"], check=False).returncode != 0
