"""Bad input never halts the pipeline, never corrupts a mart, and always gets a clear answer.

One warehouse for the module: a clean generation by six concurrent writers, then the
dirty rows of issue 11's observations, through `cinema ingest` and direct INSERTs as
the producer role; load, transform, check. Then a seeded generator of random dirty
rows, a few rounds on the same warehouse, each followed by load, transform and check.
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cinema import db
from cinema.report.marts import MARTS
from cinema.warehouse import warehouse_client
from producer.catalog import load_movies
from tests.integration.conftest import RunningStack
from tests.integration.test_dbt import Warehouse, new_warehouse

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
MOVIE = 1
RUNTIME_MS = next(movie.runtime_seconds for movie in load_movies() if movie.movie_id == MOVIE) * 1000
# Users of this module's own: a country no seed lists, and one the loader must
# quarantine (ClickHouse cannot hold 'infinity').
USER, ZZ_USER, QUARANTINED_USER = 1, 990_201, 990_202
BIGINT_MAX = 2**63 - 1
RECEIVED_IN_2299 = "2299-01-01 00:00:00+00"
EVENT_COLUMNS = "event_id, session_id, user_id, movie_id, device_type, event_type, position_ms, event_time"


def event(
    session_id: str, event_type: str, at: datetime, position_ms: int, *, user_id: int = USER, event_id: str = ""
) -> dict[str, object]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "session_id": session_id,
        "user_id": user_id,
        "movie_id": MOVIE,
        "device_type": "smart_tv",
        "event_type": event_type,
        "position_ms": position_ms,
        "event_time": at.isoformat(),
    }


def ingest(stack: RunningStack, path: Path, events: list[dict[str, object]], *, check: bool = True) -> Any:
    path.write_text("".join(json.dumps(item) + "\n" for item in events))
    return stack.cinema("ingest", str(path), check=check)


def insert(stack: RunningStack, sql: str, *rows: tuple[object, ...]) -> None:
    """Direct INSERTs as the producer role, as any client of the publisher could."""
    with db.closing(db.producer(stack.settings)) as connection:
        with connection.cursor() as cursor:
            for row in rows:
                cursor.execute(sql, row)
        connection.commit()


def insert_events(stack: RunningStack, *rows: tuple[object, ...]) -> None:
    insert(stack, f"INSERT INTO viewing_events ({EVENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", *rows)


def repair_quarantined_user(stack: RunningStack) -> None:
    db.run_as_admin(
        stack.settings,
        "publisher",
        f"UPDATE users SET signed_up_at = '2026-01-01 00:00:00+00' WHERE user_id = {QUARANTINED_USER}",
    )


def new_session() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Scenario:
    warehouse: Warehouse
    truth: list[dict[str, str]]
    sessions: dict[str, str]
    transform: Any
    check: Any


@pytest.fixture(scope="module")
def scenario(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("dirty")
    today = NOW.replace(hour=0, minute=0, second=0)
    generated = stack.cinema(
        "generate",
        *("--events", "6000", "--seed", "1111", "--users", "300", "--dirty-rate", "0"),
        *("--writers", "6", "--chunk-size", "250"),
        *("--start", f"{today - timedelta(days=2):%Y-%m-%d %H:%M:%S}", "--end", f"{today:%Y-%m-%d %H:%M:%S}"),
    )
    with Path(generated.stdout.rsplit("-> ", 1)[1].strip()).open(newline="") as handle:
        truth = list(csv.DictReader(handle))

    insert(
        stack,
        "INSERT INTO users VALUES (%s, %s, %s, 0, 'basic', %s) ON CONFLICT (user_id) DO NOTHING",
        (ZZ_USER, "Somewhere Else", "ZZ", "2026-01-01 00:00:00+00"),
        (QUARANTINED_USER, "Never Signed Up", "DE", "infinity"),
    )
    sessions = {
        name: new_session()
        for name in ("zz", "quarantined", "redelivered", "y2299", "ahead", "live", "far", "received_2299")
    }
    s = sessions
    redelivered = str(uuid.uuid4())
    start = NOW - timedelta(hours=3)
    minute = timedelta(minutes=1)
    ingest(
        stack,
        root / "sessions.jsonl",
        [
            event(s["zz"], "start", start, 0, user_id=ZZ_USER),
            event(s["zz"], "stop", start + minute, 60_000, user_id=ZZ_USER),
            event(s["quarantined"], "start", start, 0, user_id=QUARANTINED_USER),
            event(s["quarantined"], "stop", start + minute, 60_000, user_id=QUARANTINED_USER),
            event(s["redelivered"], "start", start, 0),
            event(s["redelivered"], "heartbeat", start + minute, 60_000, event_id=redelivered),
            event(s["redelivered"], "stop", start + 2 * minute, 120_000),
            event(s["y2299"], "start", start, 0),
            event(s["y2299"], "heartbeat", start + minute, 60_000),
            # no stop, last seen half an hour ago: in progress at the load time
            event(s["live"], "start", NOW - 31 * minute, 0),
            event(s["live"], "heartbeat", NOW - 30 * minute, 60_000),
            event(s["far"], "start", start, 0),
            event(s["far"], "heartbeat", start + minute, BIGINT_MAX),
            event(s["far"], "heartbeat", start + 2 * minute, 10 * RUNTIME_MS),
            event(s["far"], "stop", start + 3 * minute, 180_000),
        ],
    )
    # The same event_id again, a minute and a half in, received later.
    ingest(
        stack,
        root / "again.jsonl",
        [event(s["redelivered"], "heartbeat", start + 1.5 * minute, 90_000, event_id=redelivered)],
    )
    insert_events(
        stack,
        (str(uuid.uuid4()), s["y2299"], USER, MOVIE, "smart_tv", "heartbeat", 120_000, "2299-06-01 00:00:00+00"),
        (str(uuid.uuid4()), s["ahead"], USER, MOVIE, "smart_tv", "start", 0, NOW + timedelta(days=5 * 365)),
    )
    # A sender whose clock says 2299 stamps both: received, it claims, in 2299.
    insert(
        stack,
        f"INSERT INTO viewing_events ({EVENT_COLUMNS}, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            str(uuid.uuid4()),
            s["received_2299"],
            USER,
            MOVIE,
            "smart_tv",
            "start",
            0,
            RECEIVED_IN_2299,
            RECEIVED_IN_2299,
        ),
    )
    warehouse = new_warehouse(stack, root)
    warehouse.load()
    transform = warehouse.cinema("transform", check=False)
    check = warehouse.cinema("check", check=False)
    yield Scenario(warehouse, truth, sessions, transform, check)
    # Later modules load the shared servers whole and count their own quarantined rows,
    # and compare as_of with the newest receipt they load: take the 2299 stamp back.
    repair_quarantined_user(stack)
    for side in ("publisher", "subscriber"):
        db.run_as_admin(stack.settings, side, f"DELETE FROM viewing_events WHERE received_at = '{RECEIVED_IN_2299}'")


def sessions_by_id(scenario: Scenario) -> dict[str, dict[str, Any]]:
    rows = scenario.warehouse.query("SELECT * FROM cinema_marts.viewing_sessions")
    return {str(row["session_id"]): row for row in rows}


def excluded(scenario: Scenario, session: str) -> list[str]:
    rows = scenario.warehouse.query(
        "SELECT exclusion_reason FROM cinema_marts.excluded_events "
        f"WHERE session_id = '{scenario.sessions[session]}' ORDER BY event_time"
    )
    return [row["exclusion_reason"] for row in rows]


def test_dirty_rows_leave_transform_green(scenario: Scenario) -> None:
    """Observation 3: each of these rows used to fail a test and stop every mart."""
    assert scenario.transform.returncode == 0, scenario.transform.stdout[-3000:]
    assert "ERROR=0" in scenario.transform.stdout


def test_a_heartbeat_in_2299_grows_no_mart(scenario: Scenario) -> None:
    """Observation 1: it overflowed ClickHouse's Date into 65,536 days of daily_viewing."""
    assert excluded(scenario, "y2299") == ["event_time_after_received_at"]
    assert excluded(scenario, "ahead") == ["event_time_after_received_at"]
    session = sessions_by_id(scenario)[scenario.sessions["y2299"]]
    assert session["watched_ms"] == 60_000
    (days,) = scenario.warehouse.query(
        "SELECT min(day) AS first, max(day) AS last, count() AS days FROM cinema_marts.daily_viewing"
    )
    (events,) = scenario.warehouse.query(
        "SELECT min(toDate(event_time)) AS first, max(toDate(event_time)) AS last FROM cinema_raw.viewing_events "
        "WHERE id NOT IN (SELECT delivery_id FROM cinema_marts.excluded_events)"
    )
    assert events["first"] <= days["first"] <= days["last"] <= events["last"] <= NOW.date()
    assert days["days"] <= (days["last"] - days["first"]).days + 1
    # now_watching ends at the minute of the newest event that counts, not in 2299.
    (window,) = scenario.warehouse.query(
        "SELECT min(minute) AS first, max(minute) AS last, count() AS minutes FROM cinema_marts.now_watching"
    )
    (newest,) = scenario.warehouse.query(
        "SELECT toStartOfMinute(max(event_time)) AS minute FROM cinema_raw.viewing_events "
        "WHERE id NOT IN (SELECT delivery_id FROM cinema_marts.excluded_events)"
    )
    assert window["last"] == newest["minute"] <= NOW.replace(tzinfo=None)
    assert (window["first"], window["minutes"]) == (newest["minute"] - timedelta(hours=3), 3 * 60 + 1)


def test_a_delivery_received_in_2299_moves_no_as_of(scenario: Scenario) -> None:
    """Every mart's as_of is the newest receipt of a delivery that counts; one stamped
    2299 is excluded and moves none of them."""
    assert excluded(scenario, "received_2299") == ["received_at_after_loaded_at"]
    (counted,) = scenario.warehouse.query(
        "SELECT max(received_at) AS newest FROM cinema_raw.viewing_events "
        "WHERE id NOT IN (SELECT delivery_id FROM cinema_marts.excluded_events)"
    )
    assert counted["newest"] <= NOW.replace(tzinfo=None) + timedelta(hours=1)
    for mart in MARTS:
        (as_of,) = scenario.warehouse.query(f"SELECT min(as_of) AS first, max(as_of) AS last FROM cinema_marts.{mart}")
        assert as_of["first"] == as_of["last"] == counted["newest"], mart


def test_an_event_years_ahead_leaves_sessions_in_progress(scenario: Scenario) -> None:
    """Observation 1: in_progress was judged at the newest event, which one bad row moved."""
    assert sessions_by_id(scenario)[scenario.sessions["live"]]["end_reason"] == "in_progress"


def test_impossible_positions_are_excluded_and_complete_nothing(scenario: Scenario) -> None:
    """Observation 1: 2^63-1 and ten times the runtime counted the session as completed."""
    assert excluded(scenario, "far") == ["position_beyond_runtime", "position_beyond_runtime"]
    session = sessions_by_id(scenario)[scenario.sessions["far"]]
    assert (session["max_position_ms"], session["is_completed"], session["events"]) == (180_000, False, 2)


def test_concurrent_writers_make_no_late_events(scenario: Scenario) -> None:
    """Observation 2: arrival order was read from ids, which six writers interleave."""
    sessions = sessions_by_id(scenario)
    clean = [sessions[row["session_id"]] for row in scenario.truth]
    assert len(clean) > 20
    assert sum(session["late_events"] for session in clean) == 0


def test_an_unknown_country_gets_the_unknown_member(scenario: Scenario) -> None:
    """Observation 3: 'ZZ' failed the country_regions relationship test."""
    rows = scenario.warehouse.query(
        "SELECT country_name, region, sessions FROM cinema_marts.device_country_breakdown WHERE country_code = 'ZZ'"
    )
    assert rows == [{"country_name": "Unknown", "region": "Unknown", "sessions": 1}]
    assert "relationships_stg_cinema__users_country_code" in scenario.transform.stdout
    assert "WARN" in scenario.transform.stdout


def test_events_of_a_quarantined_user_are_excluded(scenario: Scenario) -> None:
    """Observation 3: they failed the user_id relationship test."""
    assert excluded(scenario, "quarantined") == ["unknown_user", "unknown_user"]
    assert scenario.sessions["quarantined"] not in sessions_by_id(scenario)


def test_a_redelivery_with_another_payload_loses_to_the_first_received(scenario: Scenario) -> None:
    """Observation 3: it failed unique_stg_cinema__viewing_events_event_id."""
    assert excluded(scenario, "redelivered") == ["conflicting_redelivery"]
    session = sessions_by_id(scenario)[scenario.sessions["redelivered"]]
    assert (session["events"], session["watched_ms"], session["duplicate_deliveries"]) == (3, 120_000, 0)


def test_check_is_green_and_names_what_was_set_aside(scenario: Scenario) -> None:
    """Observation 4: it reported a MISMATCH for quarantined rows, as if they were lost."""
    assert scenario.check.returncode == 0, scenario.check.stdout + scenario.check.stderr
    assert "MISMATCH" not in scenario.check.stdout
    assert "quarantined" in scenario.check.stdout
    assert "excluded (cinema_marts.excluded_events)" in scenario.check.stdout


def test_check_fails_naming_a_lost_and_a_doubled_row(stack: RunningStack, tmp_path: Path) -> None:
    """A check only ever seen green proves nothing. On a warehouse of its own, a doubled
    raw row, a lost one and a doubled quarantine row each turn it red: exit 1, the
    check named with both figures."""
    warehouse = new_warehouse(stack, tmp_path)
    warehouse.load()
    green = warehouse.cinema("check", check=False)
    assert green.returncode == 0, green.stdout + green.stderr
    (before,) = warehouse.query(
        "SELECT (SELECT count() FROM cinema_raw.viewing_events) AS raw, "
        "(SELECT min(id) FROM cinema_raw.viewing_events) AS first, "
        "(SELECT count() FROM cinema_raw._quarantine WHERE table_name = 'viewing_events') AS quarantined"
    )
    raw, first, quarantined = before["raw"], before["first"], before["quarantined"]
    subscriber = raw + quarantined

    def change(sql: str) -> None:
        with warehouse_client(warehouse.stack.settings) as client:
            client.command(sql)

    def check_fails(*mismatches: str) -> None:
        result = warehouse.cinema("check", check=False)
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stderr
        assert result.stdout.count("MISMATCH") == len(mismatches), result.stdout
        for mismatch in mismatches:
            assert mismatch in result.stderr, (mismatch, result.stderr)

    change(f"INSERT INTO cinema_raw.viewing_events SELECT * FROM cinema_raw.viewing_events WHERE id = {first}")
    check_fails(
        f"raw rows + quarantined = subscriber rows (loader): expected {subscriber:,}, found {subscriber + 1:,}",
        f"raw distinct ids = raw rows (exactly once): expected {raw + 1:,}, found {raw:,}",
    )
    # Both copies go: one row lost.
    change(f"DELETE FROM cinema_raw.viewing_events WHERE id = {first}")
    check_fails(f"raw rows + quarantined = subscriber rows (loader): expected {subscriber:,}, found {subscriber - 1:,}")
    # Quarantined instead, as the loader would have: accounted for again.
    quarantine = (
        "INSERT INTO cinema_raw._quarantine (table_name, row_key, _xid, reason, row_json) "
        f"VALUES ('viewing_events', '{first}', 1, 'a test', '{{}}')"
    )
    change(quarantine)
    accounted = warehouse.cinema("check", check=False)
    assert accounted.returncode == 0, accounted.stdout + accounted.stderr
    change(quarantine)
    check_fails(
        "quarantined distinct events = quarantined rows (exactly once): "
        f"expected {quarantined + 2:,}, found {quarantined + 1:,}"
    )


def test_check_without_marts_prints_its_table_and_passes(stack: RunningStack, tmp_path: Path) -> None:
    """Observation 4: with the marts missing it crashed with UNKNOWN_TABLE."""
    warehouse = new_warehouse(stack, tmp_path)
    before = warehouse.cinema("check", check=False)
    warehouse.load()
    after = warehouse.cinema("check", check=False)
    for result in (before, after):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "not built yet" in result.stdout
    assert "raw distinct ids = raw rows" in after.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"event_time": "0001-01-01T00:00:00Z"}, "line 1: event_time must be on or after 2000-01-01"),
        ({"event_time": "0026-05-01T00:00:00Z"}, "line 1: event_time must be on or after 2000-01-01"),
        ({"event_time": "1999-12-31T23:59:59Z"}, "line 1: event_time must be on or after 2000-01-01"),
        ({"position_ms": 2**63}, "line 1: position_ms must be an integer from 0 to 9223372036854775807"),
        ({"user_id": 2**31}, "line 1: user_id must be an integer from 1 to 2147483647"),
        ({"device_type": "x" * 10_000_000}, "(10,000,002 characters)"),
        (bytes(range(256)), "line 1: contains NUL characters"),
        ('{"device_type": "télé"}\n'.encode("latin-1"), "line 1: not UTF-8 text (byte 0xe9"),
        ('{"device_type": "tv"}\n'.encode("utf-16"), "line 1: not UTF-8 text (byte 0xff"),
    ],
)
def test_ingest_answers_bad_files_in_a_line_naming_line_and_field(
    stack: RunningStack, tmp_path: Path, content: bytes | dict[str, object], message: str
) -> None:
    """Observation 5: these were mangled (0001 became 2001), tracebacks, or 10 MB of output."""
    path = tmp_path / "events.jsonl"
    if isinstance(content, dict):
        good = event(new_session(), "start", NOW - timedelta(hours=1), 0)
        content = (json.dumps({**good, **content}) + "\n").encode()
    path.write_bytes(content)
    before = db.count_events(stack.settings, "publisher")
    result = stack.cinema("ingest", str(path), check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr) < 3_000
    assert db.count_events(stack.settings, "publisher") == before


# The property: whatever plausible or implausible rows arrive, transform stays green,
# the marts stay inside the plausible events' dates, no session watches more than its
# wall-clock span, and check accounts for every row.
ROUNDS = (7, 8, 9)


def random_rows(
    rng: random.Random, existing: list[tuple[str, str]]
) -> tuple[list[dict[str, object]], list[tuple[object, ...]]]:
    """Events for `cinema ingest` and rows for direct INSERTs, some of them implausible."""
    ingested: list[dict[str, object]] = []
    inserted: list[tuple[object, ...]] = []
    for _ in range(rng.randint(3, 6)):
        session = new_session()
        at = NOW - timedelta(minutes=rng.randint(10, 60 * 24 * 20))
        position = 0
        for number in range(rng.randint(1, 8)):
            kind = (
                "start"
                if number == 0 and rng.random() < 0.8
                else rng.choice(("heartbeat", "pause", "resume", "seek", "stop"))
            )
            ingested.append(event(session, kind, at, position))
            at += timedelta(seconds=rng.randint(1, 3600))
            position += rng.randint(0, 600_000)
            if rng.random() < 0.2:
                existing.append((str(ingested[-1]["event_id"]), session))
    for _ in range(rng.randint(2, 6)):
        session = rng.choice([session for _, session in existing]) if existing and rng.random() < 0.5 else new_session()
        event_time: object = rng.choice(
            (
                NOW + timedelta(days=rng.randint(1, 100 * 365)),
                datetime(2299, 12, 31, tzinfo=UTC),
                datetime(2000, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 9000)),
                NOW - timedelta(minutes=rng.randint(1, 600)),
            )
        )
        position = rng.choice((0, rng.randint(0, RUNTIME_MS), RUNTIME_MS * rng.randint(2, 1000), BIGINT_MAX))
        event_id = rng.choice(existing)[0] if existing and rng.random() < 0.3 else str(uuid.uuid4())
        kind = rng.choice(("start", "heartbeat", "pause", "resume", "seek", "stop"))
        user = rng.choice((USER, ZZ_USER, QUARANTINED_USER))
        inserted.append((event_id, session, user, MOVIE, "phone", kind, position, event_time))
    return ingested, inserted


def test_random_dirty_rows_never_break_a_mart(scenario: Scenario, tmp_path: Path) -> None:
    warehouse, stack = scenario.warehouse, scenario.warehouse.stack
    existing: list[tuple[str, str]] = []
    for seed in ROUNDS:
        rng = random.Random(seed)
        ingested, inserted = random_rows(rng, existing)
        # A file with one bad line among good ones writes nothing.
        rejected = ingest(stack, tmp_path / f"bad-{seed}.jsonl", [*ingested, {"event_time": "yesterday"}], check=False)
        assert rejected.returncode == 1
        ingest(stack, tmp_path / f"good-{seed}.jsonl", ingested)
        insert_events(stack, *inserted)
        warehouse.load()
        transform = warehouse.cinema("transform", check=False)
        assert transform.returncode == 0, (seed, transform.stdout[-3000:])
        check = warehouse.cinema("check", check=False)
        assert check.returncode == 0, (seed, check.stdout + check.stderr)
        (bounds,) = warehouse.query(
            "SELECT min(event_time) AS first, max(event_time) AS last FROM cinema_raw.viewing_events "
            "WHERE id NOT IN (SELECT delivery_id FROM cinema_marts.excluded_events)"
        )
        (days,) = warehouse.query("SELECT min(day) AS first, max(day) AS last FROM cinema_marts.daily_viewing")
        assert bounds["first"].date() <= days["first"] <= days["last"] <= bounds["last"].date(), seed
        (sessions,) = warehouse.query(
            "SELECT min(started_at) AS first, max(ended_at) AS last, "
            "countIf(watched_ms > dateDiff('millisecond', started_at, ended_at) OR watched_ms < 0) AS impossible "
            "FROM cinema_marts.viewing_sessions"
        )
        assert bounds["first"] <= sessions["first"] <= sessions["last"] <= bounds["last"], seed
        assert sessions["impossible"] == 0, seed


def test_events_of_a_user_loaded_later_count_once_the_user_is_there(scenario: Scenario) -> None:
    """unknown_user is not final: once the user is repaired and loaded, an incremental run
    counts the session, exactly as a full refresh does."""
    warehouse = scenario.warehouse
    repair_quarantined_user(warehouse.stack)
    warehouse.load()
    warehouse.cinema("transform")
    session = sessions_by_id(scenario)[scenario.sessions["quarantined"]]
    assert (session["events"], session["watched_ms"], session["end_reason"]) == (2, 60_000, "stopped")
    assert excluded(scenario, "quarantined") == []
    incremental = warehouse.table("cinema_marts.viewing_sessions")
    warehouse.cinema("transform", "--full-refresh")
    assert warehouse.table("cinema_marts.viewing_sessions") == incremental
