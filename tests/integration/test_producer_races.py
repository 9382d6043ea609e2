"""Two identical generations at once, on real PostgreSQL: every chunk is written once.

Each chunk is one transaction that also inserts its `(run_key, chunk_no)` row into
`producer_batches`; of two writers racing for a chunk, the second fails on that key
and rolls its whole chunk back. A lock on `producer_batches` holds both generations
until each has a writer waiting on every chunk it took, so the race is certain.
"""

from __future__ import annotations

import csv
import re
import subprocess
import time
from pathlib import Path

import pytest

from cinema import db
from tests.integration.conftest import CINEMA, RunningStack

pytestmark = pytest.mark.integration

EVENTS = 20_000
CHUNK_SIZE = 1_000
WRITERS = 4
GENERATION = (
    "generate",
    "--events",
    str(EVENTS),
    "--seed",
    "4101",
    "--chunk-size",
    str(CHUNK_SIZE),
    "--writers",
    str(WRITERS),
    "--start",
    "2025-03-01",
    "--end",
    "2025-03-08",
)
OUTCOME = re.compile(
    r"run (?P<run_key>\w+): (?P<written>\d+) events written .*, (?P<skipped>\d+) chunk\(s\) already there, "
    r"(?P<sessions>\d+) finished sessions -> (?P<truth>\S+)"
)


def start_generation(stack: RunningStack, log_file: Path) -> subprocess.Popen[str]:
    with log_file.open("w") as output:
        return subprocess.Popen(
            [CINEMA, *GENERATION], env=stack.env, cwd=stack.workdir, stdout=output, stderr=subprocess.STDOUT, text=True
        )


def writers_waiting_for_the_lock(connection: db.Connection) -> int:
    return int(
        db.scalar(
            connection,
            "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) WHERE NOT granted "
            "AND relation = 'producer_batches'::regclass AND application_name = 'cinema-producer'",
        )
    )


def test_two_identical_generations_at_once_write_each_chunk_once(stack, tmp_path):
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with db.closing(db.admin(stack.settings, "publisher")) as gate:
        before = int(db.scalar(gate, "SELECT coalesce(max(id), 0) FROM viewing_events"))
        gate.autocommit = False
        with gate.cursor() as cursor:
            # Reads of producer_batches go on (each generation sees no chunk committed);
            # every chunk's INSERT into it waits until the gate opens.
            cursor.execute("LOCK TABLE producer_batches IN EXCLUSIVE MODE")
        generations = [start_generation(stack, log) for log in logs]
        with db.closing(db.admin(stack.settings, "publisher")) as watcher:
            deadline = time.monotonic() + 120
            while writers_waiting_for_the_lock(watcher) < 2 * WRITERS:
                running = [generation.poll() is None for generation in generations]
                assert all(running) and time.monotonic() < deadline, [log.read_text() for log in logs]
                time.sleep(0.1)
        gate.commit()
    exit_codes = [generation.wait(300) for generation in generations]

    outputs = [log.read_text() for log in logs]
    assert exit_codes == [0, 0], outputs
    outcomes = [OUTCOME.search(output) for output in outputs]
    assert all(outcomes), outputs
    first, second = (outcome.groupdict() for outcome in outcomes if outcome)
    assert first["run_key"] == second["run_key"]
    assert int(first["written"]) + int(second["written"]) == EVENTS
    # Both found no chunk committed, so every chunk one of them skipped lost a race.
    assert int(first["skipped"]) + int(second["skipped"]) == EVENTS // CHUNK_SIZE
    with db.closing(db.admin(stack.settings, "publisher")) as connection:
        rows, distinct = (
            db.scalar(connection, f"SELECT {what} FROM viewing_events WHERE id > %s", (before,))
            for what in ("count(*)", "count(DISTINCT event_id)")
        )
        chunks, chunk_events = (
            db.scalar(connection, f"SELECT {what} FROM producer_batches WHERE run_key = %s", (first["run_key"],))
            for what in ("count(*)", "sum(events)")
        )
    assert (rows, distinct) == (EVENTS, EVENTS)
    assert (chunks, chunk_events) == (EVENTS // CHUNK_SIZE, EVENTS)
    # The same ground truth from both, whole.
    assert first["truth"] == second["truth"]
    assert first["sessions"] == second["sessions"]
    with Path(first["truth"]).open(newline="") as truth:
        assert sum(1 for _ in csv.DictReader(truth)) == int(first["sessions"])
