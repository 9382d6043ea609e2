"""dbt on embedded ClickHouse, end to end: producer -> replication -> loader -> `cinema transform`.

The marts are checked against the producer's ground truth, session by session, and an
incremental build after more (late, duplicated, continuing) events must equal a full
refresh. Each test builds its own chdb warehouse; the PostgreSQL servers are shared,
so checks look only at this module's sessions or compare whole tables built from
the same raw data.
"""

from __future__ import annotations

import csv
import json
import math
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cinema import db
from cinema.paths import DBT_PROJECT
from cinema.replication import wait_for_subscriber
from cinema.report.marts import MARTS
from cinema.warehouse import warehouse_client
from producer.catalog import load_movies
from tests.integration.conftest import RunningStack

pytestmark = pytest.mark.integration

SEED = "918273"
KEYS = {
    "cinema_intermediate.int_viewing_events_sessionized": "session_id",
    "cinema_marts.viewing_sessions": "session_id",
    "cinema_marts.daily_viewing": "day",
    "cinema_marts.movie_performance": "movie_id",
    "cinema_marts.movie_dropoff": "movie_id, position_bucket_pct",
    "cinema_marts.viewing_heatmap": "weekday, hour",
    "cinema_marts.device_country_breakdown": "device_type, country_code",
    "cinema_marts.excluded_events": "delivery_id",
}


def inactivity_timeout() -> timedelta:
    variables = yaml.safe_load((DBT_PROJECT / "dbt_project.yml").read_text())["vars"]
    return timedelta(minutes=variables["session_inactivity_timeout_minutes"])


@dataclass(frozen=True)
class Warehouse:
    """The shared servers with a chdb directory and dbt target folder of its own."""

    stack: RunningStack
    dbt_target: Path

    def cinema(self, *args: str, check: bool = True) -> Any:
        return self.stack.cinema(*args, check=check)

    def load(self) -> None:
        wait_for_subscriber(self.stack.settings)
        self.cinema("load", "--until-caught-up")

    def query(self, sql: str) -> list[dict[str, Any]]:
        with warehouse_client(self.stack.settings) as client:
            return list(client.query(sql).named_results())

    def table(self, name: str) -> list[dict[str, Any]]:
        return self.query(f"SELECT * FROM {name} ORDER BY {KEYS[name]}")


def new_warehouse(stack: RunningStack, root: Path) -> Warehouse:
    own = stack.with_warehouse(root / "warehouse")
    target = root / "dbt-target"
    env = {**own.env, "DBT_TARGET_PATH": str(target), "DBT_LOG_PATH": str(root / "dbt-logs")}
    return Warehouse(replace(own, env=env), target)


def utc(text: str) -> datetime:
    """The ground truth's timestamps ('2026-10-05 12:00:00.123+00') as the naive UTC the client returns."""
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Built:
    warehouse: Warehouse
    truth: list[dict[str, str]]
    transform_output: str


@pytest.fixture(scope="module")
def built(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Built:
    generated = stack.cinema(
        "generate",
        *("--events", "40000", "--seed", SEED, "--users", "300", "--dirty-rate", "0.15"),
        *("--start", "2026-10-05 00:00:00", "--end", "2026-10-07 00:00:00"),
    )
    truth_path = Path(generated.stdout.rsplit("-> ", 1)[1].strip())
    with truth_path.open(newline="") as handle:
        truth = list(csv.DictReader(handle))
    warehouse = new_warehouse(stack, tmp_path_factory.mktemp("dbt-truth"))
    warehouse.load()
    result = warehouse.cinema("transform")
    return Built(warehouse, truth, result.stdout)


def test_transform_builds_and_tests_every_node_green(built: Built) -> None:
    assert "Completed successfully" in built.transform_output
    assert "ERROR=0" in built.transform_output
    for mart in MARTS:
        assert f"cinema_marts`.`{mart}`" in built.transform_output


def test_viewing_sessions_equal_the_ground_truth_for_every_complete_session(built: Built) -> None:
    """Clean sessions and the duplicated and late ones (cleaning must recover their
    truth): exact equality, floats included."""
    sessions = {
        str(row["session_id"]): row for row in built.warehouse.query("SELECT * FROM cinema_marts.viewing_sessions")
    }
    (loaded,) = built.warehouse.query("SELECT max(_loaded_at) AS at FROM cinema_raw.viewing_events")
    in_progress_after = loaded["at"] - inactivity_timeout()
    complete = [row for row in built.truth if row["dirty_kind"] != "orphan"]
    assert len(complete) > 150
    assert {row["dirty_kind"] for row in complete} == {"", "duplicate", "late"}
    mismatches = []
    for truth in complete:
        session = sessions.get(truth["session_id"])
        if session is None:
            mismatches.append((truth["session_id"], "missing"))
            continue
        expected = {
            "user_id": int(truth["user_id"]),
            "movie_id": int(truth["movie_id"]),
            "device_type": truth["device_type"],
            "started_at": utc(truth["started_at"]),
            "ended_at": utc(truth["ended_at"]),
            "watched_seconds": int(truth["watched_ms"]) / 1000,
            "max_position_seconds": int(truth["max_position_ms"]) / 1000,
            "completion_ratio": float(truth["completion"]),
            "is_completed": truth["completed"] == "1",
            "pauses": int(truth["pauses"]),
            "seeks": int(truth["seeks"]),
            "events": int(truth["events"]),
            "is_orphan": False,
        }
        actual = {key: session[key] for key in expected}
        reason_ok = session["end_reason"] == truth["end_reason"] or (
            # A session without a stop whose last event is recent may still go on.
            session["end_reason"] == "in_progress"
            and truth["end_reason"] == "abandoned"
            and session["ended_at"] >= in_progress_after
        )
        if actual != expected or not reason_ok:
            mismatches.append((truth["session_id"], truth["dirty_kind"], expected, actual, session["end_reason"]))
    assert mismatches == [], f"{len(mismatches)} of {len(complete)} sessions differ: {mismatches[:3]}"


def test_dirty_data_is_flagged_and_orphans_kept_out_of_the_aggregates(built: Built) -> None:
    sessions = {
        str(row["session_id"]): row for row in built.warehouse.query("SELECT * FROM cinema_marts.viewing_sessions")
    }

    def of_kind(kind: str) -> list[dict[str, Any]]:
        return [sessions[row["session_id"]] for row in built.truth if row["dirty_kind"] == kind]

    assert sum(session["duplicate_deliveries"] for session in of_kind("duplicate")) > 0
    assert sum(session["late_events"] for session in of_kind("late")) > 0
    orphans = of_kind("orphan")
    assert orphans
    assert all(session["is_orphan"] and session["watched_ms"] == 0 for session in orphans)
    (counts,) = built.warehouse.query(
        "SELECT (SELECT countIf(NOT is_orphan) FROM cinema_marts.viewing_sessions) AS sessions,"
        " (SELECT sum(sessions) FROM cinema_marts.daily_viewing) AS daily,"
        " (SELECT sum(sessions) FROM cinema_marts.movie_performance) AS by_movie"
    )
    assert counts["sessions"] == counts["daily"] == counts["by_movie"]


def test_docs_generate_writes_the_catalog_of_the_marts(built: Built) -> None:
    built.warehouse.cinema("dbt", "docs", "generate")
    catalog = json.loads((built.warehouse.dbt_target / "catalog.json").read_text())
    columns = catalog["nodes"]["model.cinema.viewing_sessions"]["columns"]
    assert columns["completion_ratio"]["type"] == "Float64"
    assert catalog["nodes"]["model.cinema.viewing_sessions"]["metadata"]["schema"] == "cinema_marts"


def test_cinema_dbt_is_dbt_with_dbts_exit_codes(built: Built) -> None:
    listed = built.warehouse.cinema("dbt", "ls", "--resource-type", "model", "--select", "marts")
    assert {line for line in listed.stdout.splitlines() if line.startswith("cinema.")} == {
        f"cinema.marts.{mart}" for mart in MARTS
    }
    # The marts were built with completion at 0.9; testing them against 0.5 must fail (1).
    failing = built.warehouse.cinema(
        "dbt",
        *("test", "--select", "assert_viewing_sessions_are_possible", "--vars", "{completed_at_ratio: 0.5}"),
        check=False,
    )
    assert failing.returncode == 1, failing.stdout
    unusable = built.warehouse.cinema("dbt", "build", "--no-such-flag", check=False)
    assert unusable.returncode == 2
    assert "no-such-flag" in unusable.stderr


# The incremental test's own sessions, yesterday evening (UTC): in the past, as
# `cinema ingest` stamps them received now, and well within the 30 days an event may
# be older than its arrival. Each transform judges them at its own `--as-of`.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
FIRST_AS_OF = f"{DAY + timedelta(hours=21):%Y-%m-%d %H:%M:%S}"
SECOND_AS_OF = f"{DAY + timedelta(hours=24, minutes=30):%Y-%m-%d %H:%M:%S}"
# The film whose runtime the incremental test corrects (and restores) on the publisher.
CORRECTED_MOVIE = 2
CORRECTED_RUNTIME_SECONDS = next(movie.runtime_seconds for movie in load_movies() if movie.movie_id == CORRECTED_MOVIE)


class Sessions:
    """Events of hand-made sessions for `cinema ingest`, by session name."""

    def __init__(self, user_id: int, movie_id: int) -> None:
        self.user_id, self.movie_id = user_id, movie_id
        self.ids: dict[str, str] = {}

    def event(
        self,
        session: str,
        event_type: str,
        at: str,
        position_ms: int,
        *,
        event_id: str | None = None,
        movie_id: int | None = None,
    ) -> dict[str, object]:
        session_id = self.ids.setdefault(session, str(uuid.uuid4()))
        hours, minutes, seconds = (int(part) for part in at.split(":"))
        return {
            "event_id": event_id or str(uuid.uuid4()),
            "session_id": session_id,
            "user_id": self.user_id,
            "movie_id": movie_id or self.movie_id,
            "device_type": "smart_tv",
            "event_type": event_type,
            "position_ms": position_ms,
            "event_time": (DAY + timedelta(hours=hours, minutes=minutes, seconds=seconds)).isoformat(),
        }


def ingest(warehouse: Warehouse, path: Path, events: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    warehouse.cinema("ingest", str(path))


def snapshot(warehouse: Warehouse) -> dict[str, list[dict[str, Any]]]:
    return {name: warehouse.table(name) for name in KEYS}


def assert_same_tables(incremental: dict[str, list[dict]], full: dict[str, list[dict]]) -> None:
    for name, rows in full.items():
        assert len(incremental[name]) == len(rows), name
        for built_incrementally, built_in_full in zip(incremental[name], rows, strict=True):
            assert built_incrementally.keys() == built_in_full.keys()
            for column, value in built_in_full.items():
                other = built_incrementally[column]
                if isinstance(value, float):
                    # Aggregates may sum floats in another order: equal up to rounding.
                    assert math.isclose(other, value, rel_tol=1e-12, abs_tol=1e-12), (name, column)
                else:
                    assert other == value, (name, column, built_in_full)


def movie_runtime(stack: RunningStack, movie_id: int, runtime_seconds: int) -> None:
    db.run_as_admin(
        stack.settings,
        "publisher",
        f"UPDATE movies SET runtime_seconds = {runtime_seconds} WHERE movie_id = {movie_id}",
    )


def test_an_incremental_build_equals_a_full_refresh(stack: RunningStack, tmp_path: Path) -> None:
    """Across loads and runs that change a session in every way an incremental run must
    notice, each incremental build equals a full refresh of the same raw rows: new, late,
    redelivered, quiet and orphan sessions; (a) a session all of whose rows become
    excluded; (b) `as_of` moving back; (c) a run that stopped between its delete and
    its insert."""
    # Users and films must exist before events naming them can be ingested.
    stack.cinema("generate", "--events", "500", "--seed", str(int(SEED) + 1), "--users", "300")
    warehouse = new_warehouse(stack, tmp_path)
    sessions = Sessions(user_id=1, movie_id=1)
    e = sessions.event
    # (a) starts 100 minutes into a film of 2 h 55 min, whose runtime is then corrected
    # to a minute: every one of its positions is beyond it.
    redelivered = str(uuid.uuid4())
    ingest(
        warehouse,
        tmp_path / "first.jsonl",
        [
            # paused: resumes and stops in the second batch
            e("paused", "start", "20:00:00", 0),
            e("paused", "heartbeat", "20:00:30", 30_000),
            e("paused", "pause", "20:01:00", 60_000),
            # late: its 20:02 heartbeat only comes with the second batch
            e("late", "start", "20:00:00", 0),
            e("late", "heartbeat", "20:01:00", 60_000),
            e("late", "heartbeat", "20:03:00", 180_000),
            # redelivered: its heartbeat arrives again in the second batch
            e("redelivered", "start", "20:00:00", 0),
            e("redelivered", "heartbeat", "20:00:30", 30_000, event_id=redelivered),
            e("redelivered", "stop", "20:01:00", 60_000),
            # quiet: in progress at 21:00, abandoned at 00:30, without events of its own
            e("quiet", "start", "19:00:00", 0),
            e("quiet", "heartbeat", "19:00:30", 30_000),
            # orphan: a fragment without start, growing in the second batch
            e("orphan", "heartbeat", "20:05:00", 1_000),
            e("corrected", "start", "20:10:00", 6_000_000, movie_id=CORRECTED_MOVIE),
            e("corrected", "heartbeat", "20:10:30", 6_030_000, movie_id=CORRECTED_MOVIE),
            e("corrected", "stop", "20:11:00", 6_060_000, movie_id=CORRECTED_MOVIE),
        ],
    )
    warehouse.load()
    warehouse.cinema("transform", "--as-of", FIRST_AS_OF)
    first = {str(row["session_id"]): row for row in warehouse.table("cinema_marts.viewing_sessions")}
    assert first[sessions.ids["quiet"]]["end_reason"] == "in_progress"
    assert first[sessions.ids["paused"]]["end_reason"] == "in_progress"
    assert first[sessions.ids["late"]]["watched_ms"] == 180_000
    assert first[sessions.ids["corrected"]]["watched_ms"] == 60_000

    ingest(
        warehouse,
        tmp_path / "second.jsonl",
        [
            e("paused", "resume", "20:30:00", 60_000),
            e("paused", "stop", "20:31:00", 120_000),
            e("late", "heartbeat", "20:02:00", 120_000),
            e("late", "stop", "20:04:00", 240_000),
            e("redelivered", "heartbeat", "20:00:30", 30_000, event_id=redelivered),
            e("orphan", "stop", "20:06:00", 61_000),
            # newest: still in progress at 00:30
            e("newest", "start", "23:00:00", 0),
        ],
    )
    movie_runtime(stack, CORRECTED_MOVIE, 60)
    try:
        warehouse.load()
    finally:
        # Other modules load the shared servers whole.
        movie_runtime(stack, CORRECTED_MOVIE, CORRECTED_RUNTIME_SECONDS)
    warehouse.cinema("transform", "--as-of", SECOND_AS_OF)
    incremental = snapshot(warehouse)

    after = {str(row["session_id"]): row for row in incremental["cinema_marts.viewing_sessions"]}
    expected = {
        "paused": {"watched_ms": 120_000, "pauses": 1, "end_reason": "stopped", "late_events": 0},
        "late": {"watched_ms": 240_000, "late_events": 1, "events": 5, "end_reason": "stopped"},
        "redelivered": {"watched_ms": 60_000, "events": 3, "duplicate_deliveries": 1, "end_reason": "stopped"},
        "quiet": {"watched_ms": 30_000, "end_reason": "abandoned"},
        "orphan": {"is_orphan": True, "events": 2, "watched_ms": 0, "end_reason": "stopped"},
        "newest": {"watched_ms": 0, "end_reason": "in_progress"},
    }
    for name, values in expected.items():
        row = after[sessions.ids[name]]
        assert {key: row[key] for key in values} == values, name
    # (a) gone from every session table, its rows listed as excluded.
    assert sessions.ids["corrected"] not in after
    assert [
        row["exclusion_reason"]
        for row in incremental["cinema_marts.excluded_events"]
        if str(row["session_id"]) == sessions.ids["corrected"]
    ] == ["position_beyond_runtime"] * 3

    warehouse.cinema("transform", "--full-refresh", "--as-of", SECOND_AS_OF)
    assert_same_tables(incremental, snapshot(warehouse))

    # (b) as_of moves back: quiet is in progress again at 21:00, as a full refresh says.
    warehouse.cinema("transform", "--as-of", FIRST_AS_OF)
    moved_back = snapshot(warehouse)
    again = {str(row["session_id"]): row for row in moved_back["cinema_marts.viewing_sessions"]}
    assert again[sessions.ids["quiet"]]["end_reason"] == "in_progress"
    warehouse.cinema("transform", "--full-refresh", "--as-of", FIRST_AS_OF)
    full_at_first = snapshot(warehouse)
    assert_same_tables(moved_back, full_at_first)

    # (c) a run that stopped after its delete: a stopped session, which nothing else
    # would rebuild, is missing from the intermediate table; the next run puts it back.
    with warehouse_client(warehouse.stack.settings) as client:
        client.command(
            "DELETE FROM cinema_intermediate.int_viewing_events_sessionized "
            f"WHERE session_id = '{sessions.ids['redelivered']}'"
        )
    warehouse.cinema("transform", "--as-of", FIRST_AS_OF)
    assert_same_tables(snapshot(warehouse), full_at_first)
