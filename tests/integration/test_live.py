"""`cinema live` for real: producer, loader and refresh loop on the embedded stack.

One short live run (a 4-second cadence instead of a minute) stopped by SIGTERM, then a
second one resuming the same stream; then the checks: events arrived, the marts
advanced on the cadence, nothing was left running, nothing was written or loaded
twice, and the incrementally refreshed marts equal a full refresh of the same rows.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from cinema import db
from cinema.live import REFRESHES
from cinema.names import MARTS_DATABASE
from cinema.paths import executable
from cinema.report.marts import MARTS as MARTS_BUILT
from cinema.warehouse import lock_holder, warehouse_client

pytestmark = pytest.mark.integration

CADENCE_SECONDS = 4.0
RATE = 400
SEED = 151515


@dataclass(frozen=True)
class LiveRun:
    stack: Any
    began: datetime
    # When the second run was started: refreshes before it belong to the first run.
    second_run_at: float
    outputs: list[str]
    exit_codes: list[int]


def _producer_processes(state_dir: str) -> list[str]:
    """Command lines of any `cinema generate --service` of this test's seed still running on
    this test's stack (other checkouts on the machine may run the same test at the same time)."""
    found = []
    for process in Path("/proc").glob("[0-9]*"):
        try:
            arguments = (process / "cmdline").read_bytes().split(b"\0")
            environment = (process / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"--service" in arguments
            and str(SEED).encode() in arguments
            and f"CINEMA_STATE_DIR={state_dir}".encode() in environment
        ):
            found.append(b" ".join(arguments).decode())
    return found


def _run_and_terminate(own: Any, seconds: float) -> tuple[int, str]:
    process = subprocess.Popen(
        [executable("cinema"), "live", "--rate", str(RATE), "--seed", str(SEED), "--users", "300"],
        env={**own.env, "MARTS_REFRESH_SECONDS": str(CADENCE_SECONDS)},
        cwd=own.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(seconds)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


@pytest.fixture(scope="module")
def live_run(stack, tmp_path_factory):
    own = stack.with_warehouse(tmp_path_factory.mktemp("live") / "warehouse")
    began = datetime.now(UTC)
    first = _run_and_terminate(own, 30)
    second_run_at = time.time()
    second = _run_and_terminate(own, 12)
    return LiveRun(own, began, second_run_at, [first[1], second[1]], [first[0], second[0]])


def test_sigterm_stops_everything_cleanly(live_run):
    assert live_run.exit_codes == [0, 0], live_run.outputs
    # cinema.signals.stop_on_signals: reported outside the handler, a second signal would stop at once.
    for output in live_run.outputs:
        assert "SIGTERM: stopping the producer; the loader finishes its batch, the refresh its run" in output
    assert _producer_processes(live_run.stack.env["CINEMA_STATE_DIR"]) == []
    # The warehouse is free again: another process can open it at once.
    assert lock_holder(live_run.stack.settings.warehouse) in ("nobody", "an unknown process")
    with warehouse_client(live_run.stack.settings, lock_timeout_seconds=5) as client:
        assert client.query("SELECT 1").result_rows == [(1,)]


def test_events_arrive_and_the_marts_advance_within_the_cadence(live_run):
    with warehouse_client(live_run.stack.settings) as client:
        refreshes = client.query(
            "SELECT watermark, toFloat64(started_at), toFloat64(finished_at), succeeded "
            f"FROM {REFRESHES} "
            "ORDER BY started_at"
        ).result_rows
        events = client.query("SELECT count() FROM cinema_raw.viewing_events").result_rows[0][0]
        as_of = client.query(f"SELECT max(as_of) FROM {MARTS_DATABASE}.viewing_sessions").result_rows[0][0]
        newest_below_last_refresh = client.query(
            "SELECT max(received_at) FROM cinema_raw.viewing_events WHERE _xid < {watermark:UInt64}",
            parameters={"watermark": refreshes[-1][0]},
        ).result_rows[0][0]
    assert events > RATE * 10
    assert len(refreshes) >= 5
    assert all(succeeded for *_, succeeded in refreshes)
    watermarks = [watermark for watermark, *_ in refreshes]
    assert watermarks == sorted(watermarks)
    assert watermarks[-1] > watermarks[0]
    # Within one run, a refresh starts a cadence after the previous one started, or at
    # once when that one took longer.
    for earlier, later in pairwise(refreshes):
        (_, started, finished, _), (_, next_started, _, _) = earlier, later
        if started < live_run.second_run_at <= next_started:
            continue
        assert next_started - started <= max(CADENCE_SECONDS, finished - started) + 1.5
    assert as_of.replace(tzinfo=UTC) >= newest_below_last_refresh.replace(tzinfo=UTC)


def test_nothing_is_written_or_loaded_twice(live_run):
    own = live_run.stack
    with db.closing(db.admin(own.settings, "publisher")) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM viewing_events WHERE received_at >= %s", (live_run.began,)
        )
        written, distinct = cursor.fetchone()
        cursor.execute(
            "SELECT count(DISTINCT run_key), sum(events) FROM producer_batches WHERE run_key LIKE 'live-service-%%' "
            "AND written_at >= %s",
            (live_run.began,),
        )
        runs, ledger_events = cursor.fetchone()
        cursor.execute(
            "SELECT min(chunk_no), max(chunk_no), count(*) FROM producer_batches WHERE run_key LIKE 'live-service-%%' "
            "AND written_at >= %s",
            (live_run.began,),
        )
        first_chunk, last_chunk, chunks = cursor.fetchone()
    # The second run resumed the first one's stream (one run key) and skipped its chunks.
    assert runs == 1
    assert written == distinct == ledger_events
    # At this rate every 100 ms window has events: no window is missing, not even those that
    # passed while the producer was down between the two runs (the second run wrote them).
    assert (first_chunk, chunks) == (0, last_chunk + 1)
    assert written > 0
    own.cinema("load", "--until-caught-up")
    with warehouse_client(own.settings) as client:
        loaded, ids = client.query("SELECT count(), uniqExact(id) FROM cinema_raw.viewing_events").result_rows[0]
    assert loaded == ids == db.count_events(own.settings, "publisher")


def _marts(own: Any) -> dict[str, list[tuple[Any, ...]]]:
    with warehouse_client(own.settings) as client:
        return {
            table: client.query(f"SELECT * EXCEPT as_of FROM {MARTS_DATABASE}.{table} ORDER BY ALL").result_rows
            for table in MARTS_BUILT
        }


def _same(row: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    """Equal, but for float sums whose order of addition differs (parts merge in another order)."""
    return len(row) == len(other) and all(
        (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b)))
        if isinstance(a, float)
        else a == b
        for a, b in zip(row, other, strict=True)
    )


def test_incremental_refresh_equals_a_full_refresh_after_a_live_run(live_run):
    own = live_run.stack
    own.cinema("load", "--until-caught-up")
    own.cinema("live", "--refresh-once")
    incremental = _marts(own)
    own.cinema("dbt", "--quiet", "run", "--full-refresh")
    full = _marts(own)
    assert incremental["viewing_sessions"]
    # Every minute of the three hours before the newest event (which other tests' data may set).
    assert len(incremental["now_watching"]) == 3 * 60 + 1
    for table in MARTS_BUILT:
        assert len(incremental[table]) == len(full[table]), table
        mismatches = [pair for pair in zip(incremental[table], full[table], strict=True) if not _same(*pair)]
        assert mismatches == [], table


def test_a_killed_live_run_leaves_no_producer_behind(stack, tmp_path_factory):
    own = stack.with_warehouse(tmp_path_factory.mktemp("live-killed") / "warehouse")
    process = subprocess.Popen(
        [executable("cinema"), "live", "--rate", "100", "--seed", str(SEED), "--users", "50"],
        env=own.env,
        cwd=own.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _producer_processes(stack.env["CINEMA_STATE_DIR"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _producer_processes(stack.env["CINEMA_STATE_DIR"]), "the producer never started"
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 15
    while _producer_processes(stack.env["CINEMA_STATE_DIR"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _producer_processes(stack.env["CINEMA_STATE_DIR"]) == []
