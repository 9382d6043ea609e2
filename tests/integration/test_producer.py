"""The producer on real PostgreSQL: constraints, bad input, idempotency, kill -9, invariants."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from cinema import db
from cinema.replication import wait_for_subscriber
from tests.integration.conftest import CINEMA

pytestmark = pytest.mark.integration

VALID = {
    "event_id": str(uuid.uuid4()),
    "session_id": str(uuid.uuid4()),
    "user_id": 1,
    "movie_id": 1,
    "device_type": "smart_tv",
    "event_type": "start",
    "position_ms": 0,
    "event_time": "2026-11-20T20:00:00+00:00",
}
INSERT = (
    "INSERT INTO viewing_events (event_id, session_id, user_id, movie_id, device_type, event_type, position_ms,"
    " event_time) VALUES (%(event_id)s, %(session_id)s, %(user_id)s, %(movie_id)s, %(device_type)s,"
    " %(event_type)s, %(position_ms)s, %(event_time)s)"
)


def publisher_count(stack) -> int:
    with db.closing(db.monitor(stack.settings, "publisher")) as connection:
        return int(db.scalar(connection, "SELECT count(*) FROM viewing_events"))


@pytest.fixture(scope="module")
def reference_data(stack):
    """Users and movies exist once anything was generated."""
    stack.cinema("generate", "--events", "2000", "--seed", "201", "--users", "50")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_type": "rewind"}, "event_type"),
        ({"position_ms": -1}, "position_ms"),
        ({"session_id": None}, "session_id"),
        ({"user_id": None}, "user_id"),
        ({"user_id": 10_000_000}, "user_id"),
        ({"movie_id": 99_999}, "movie_id"),
        ({"device_type": "toaster"}, "device_type"),
        ({"event_time": "1999-12-31T23:00:00+00:00"}, "event_time"),
    ],
)
def test_direct_inserts_of_impossible_events_are_rejected_naming_the_field(stack, reference_data, change, field):
    before = publisher_count(stack)
    with (
        db.closing(db.producer(stack.settings)) as connection,
        connection.cursor() as cursor,
        pytest.raises(psycopg2.IntegrityError) as error,
    ):
        cursor.execute(INSERT, {**VALID, **change})
    assert field in str(error.value)
    assert publisher_count(stack) == before


def write_lines(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def test_ingest_rejects_a_bad_file_whole_and_names_line_and_field(stack, reference_data, tmp_path):
    before = publisher_count(stack)
    good = {**VALID, "event_id": str(uuid.uuid4())}
    bad = {**VALID, "event_id": str(uuid.uuid4()), "position_ms": -10}
    result = stack.cinema("ingest", str(write_lines(tmp_path / "events.jsonl", [good, bad])), check=False)
    assert result.returncode != 0
    assert "line 2: position_ms must be an integer from 0 to 9223372036854775807, got -10" in result.stderr
    assert "nothing written" in result.stderr
    assert publisher_count(stack) == before


def test_ingest_reports_what_only_the_database_knows(stack, reference_data, tmp_path):
    before = publisher_count(stack)
    unknown_user = {**VALID, "event_id": str(uuid.uuid4()), "user_id": 7_777_777}
    unknown_movie = {**VALID, "event_id": str(uuid.uuid4()), "movie_id": 4242}
    events = [VALID, unknown_user, unknown_movie]
    result = stack.cinema("ingest", str(write_lines(tmp_path / "events.jsonl", events)), check=False)
    assert result.returncode != 0
    assert "line 2: user_id 7777777 does not exist in users" in result.stderr
    assert "line 3: movie_id 4242 does not exist in movies" in result.stderr
    assert publisher_count(stack) == before


def test_ingest_writes_a_good_file_and_it_replicates(stack, reference_data, tmp_path):
    events = [{**VALID, "event_id": str(uuid.uuid4()), "position_ms": 1000 * n} for n in range(3)]
    result = stack.cinema("ingest", str(write_lines(tmp_path / "events.jsonl", events)))
    assert result.stdout.strip() == "3 event(s) written"
    wait_for_subscriber(stack.settings, timeout_seconds=60)
    with db.closing(db.monitor(stack.settings, "subscriber")) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM viewing_events WHERE event_id = ANY(%s::uuid[])",
            ([event["event_id"] for event in events],),
        )
        assert cursor.fetchone() == (3,)


def test_rerunning_a_generation_writes_nothing_more(stack):
    arguments = ("generate", "--events", "6000", "--seed", "202", "--chunk-size", "1000")
    before = publisher_count(stack)
    first = stack.cinema(*arguments)
    assert "6000 events written" in first.stdout
    second = stack.cinema(*arguments)
    assert "0 events written" in second.stdout
    assert "6 chunk(s) already there" in second.stdout
    assert publisher_count(stack) == before + 6000


def test_a_killed_generation_resumes_without_loss_or_duplicates(stack):
    arguments = ["generate", "--events", "80000", "--seed", "203", "--chunk-size", "2000", "--writers", "4"]
    before = publisher_count(stack)
    with db.closing(db.monitor(stack.settings, "publisher")) as connection:
        last_id_before = db.scalar(connection, "SELECT coalesce(max(id), 0) FROM viewing_events")
    process = subprocess.Popen(
        [CINEMA, *arguments],
        env=stack.env,
        cwd=stack.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while publisher_count(stack) - before < 20_000:
        assert time.monotonic() < deadline, "the producer wrote too little"
        assert process.poll() is None, "the producer finished before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = publisher_count(stack) - before
    assert 0 < interrupted < 80_000
    assert interrupted % 2000 == 0, "a chunk was committed partially"
    stack.cinema(*arguments)
    assert publisher_count(stack) - before == 80_000
    with db.closing(db.monitor(stack.settings, "publisher")) as connection:
        assert (
            db.scalar(
                connection,
                "SELECT count(*) - count(DISTINCT event_id) FROM viewing_events WHERE id > %s",
                (last_id_before,),
            )
            == 0
        )


def test_ground_truth_describes_the_sessions_on_the_subscriber(stack):
    result = stack.cinema("generate", "--events", "15000", "--seed", "204")
    truth_file = Path(re.search(r"-> (\S+\.csv)", result.stdout).group(1))
    wait_for_subscriber(stack.settings, timeout_seconds=60)
    with truth_file.open() as handle:
        truth = {row["session_id"]: row for row in csv.DictReader(handle)}
    assert len(truth) > 50
    with db.closing(db.monitor(stack.settings, "subscriber")) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT session_id::text, count(*), max(position_ms), min(event_time), max(event_time) "
            "FROM viewing_events WHERE session_id = ANY(%s::uuid[]) GROUP BY session_id",
            (list(truth),),
        )
        observed = {row[0]: row[1:] for row in cursor.fetchall()}
    assert observed.keys() == truth.keys()
    for session_id, (events, max_position, _, _) in observed.items():
        assert events == int(truth[session_id]["events"])
        assert max_position == int(truth[session_id]["max_position_ms"])


def test_replicated_sessions_obey_the_state_machine(stack):
    """On the subscriber: no event after stop, heartbeats only while playing, positions
    advance exactly with playback time."""
    result = stack.cinema("generate", "--events", "10000", "--seed", "205")
    wait_for_subscriber(stack.settings, timeout_seconds=60)
    # Only this run's sessions: other tests write dirty data on purpose.
    with Path(re.search(r"-> (\S+\.csv)", result.stdout).group(1)).open() as handle:
        sessions = [row["session_id"] for row in csv.DictReader(handle)]
    assert len(sessions) > 20
    with db.closing(db.monitor(stack.settings, "subscriber")) as connection:
        violations = db.scalar(
            connection,
            """
            WITH ordered AS (
                SELECT session_id, event_type, position_ms, event_time,
                       lag(event_type) OVER w AS previous_type,
                       lag(position_ms) OVER w AS previous_position,
                       lag(event_time) OVER w AS previous_time,
                       count(*) FILTER (WHERE event_type = 'stop') OVER (
                           PARTITION BY session_id ORDER BY event_time
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS stops_before,
                       (array_agg(event_type) FILTER (WHERE event_type IN ('start', 'pause', 'resume'))
                           OVER (PARTITION BY session_id ORDER BY event_time
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))[:] AS state_events
                FROM viewing_events v
                JOIN movies m USING (movie_id)
                WHERE session_id = ANY(%s::uuid[])
                WINDOW w AS (PARTITION BY session_id ORDER BY event_time)
            )
            SELECT count(*) FILTER (WHERE stops_before > 0)
                 + count(*) FILTER (WHERE event_type = 'heartbeat'
                                    AND state_events[cardinality(state_events)] = 'pause')
                 + count(*) FILTER (WHERE event_type = 'heartbeat' AND previous_type IN ('start', 'resume', 'heartbeat')
                                    AND position_ms - previous_position
                                        > extract(epoch FROM event_time - previous_time) * 1000)
            FROM ordered
        """,
            (sessions,),
        )
    assert violations == 0


def ledger_events(stack, run_key: str) -> int:
    with db.closing(db.monitor(stack.settings, "publisher")) as connection:
        return int(
            db.scalar(
                connection, "SELECT coalesce(sum(events), 0) FROM producer_batches WHERE run_key = %s", (run_key,)
            )
        )


def test_live_mode_writes_at_the_rate_for_the_duration(stack):
    with db.closing(db.monitor(stack.settings, "publisher")) as connection:
        last_id_before = db.scalar(connection, "SELECT coalesce(max(id), 0) FROM viewing_events")
    result = stack.cinema("generate", "--rate", "400", "--duration", "3", "--seed", "206", "--users", "50")
    run_key, written = re.search(r"run (\S+): (\d+) events written", result.stdout).groups()
    # Sessions start from the first second (each start is an event), so the rate holds from the start.
    assert 0.7 * 400 * 3 < int(written) < 1.3 * 400 * 3
    assert ledger_events(stack, run_key) == int(written)
    with db.closing(db.monitor(stack.settings, "publisher")) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), extract(epoch FROM max(received_at) - min(received_at)) FROM viewing_events"
            " WHERE id > %s",
            (last_id_before,),
        )
        rows, span = cursor.fetchone()
    assert rows == int(written)
    assert float(span) < 3.0


def test_live_mode_stops_on_sigterm_with_what_it_handed_over_committed(stack):
    before = publisher_count(stack)
    process = subprocess.Popen(
        [CINEMA, "generate", "--rate", "400", "--duration", "600", "--seed", "207", "--users", "50"],
        env=stack.env,
        cwd=stack.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while publisher_count(stack) - before < 400:
        assert time.monotonic() < deadline, "the live producer wrote too little"
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "SIGTERM: committing the events already handed to the writers, then stopping" in stderr
    run_key, written = re.search(r"run (\S+): (\d+) events written", stdout).groups()
    assert ledger_events(stack, run_key) == int(written) == publisher_count(stack) - before
