"""dbt on embedded ClickHouse: `cinema transform` wall time for N raw events.

For each size, a fresh chdb warehouse receives the very rows `cinema generate --seed
SEED --events N --dirty-rate DIRTY_RATE` writes, straight into the loader's raw
tables (produced in this process: what is measured is dbt, not the road the rows
took). Then the whole `cinema transform --full-refresh` is timed (process start,
parsing, every model, seed, unit and data test), and an incremental `cinema
transform` right after it, with nothing new to load. The goal for 10M events is 60 s
on this 2-core machine. No PostgreSQL is involved.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from cinema.settings import Settings
from cinema.warehouse import warehouse_client
from producer.behaviour import Behaviour
from producer.catalog import load_movies, make_users
from producer.stream import Row, World, backfill_stream

SEED = 515151
USERS = 2000
DIRTY_RATE = 0.02
END = datetime(2026, 11, 1, tzinfo=UTC)
# About a million events a week, as in the producer's backfills.
EVENTS_PER_DAY = 150_000
# Rows per insert, and per loader batch (_xid) as the loader would stamp them.
CHUNK_ROWS = 1_000_000
BATCH_ROWS = 50_000

EVENT_COLUMNS = (
    "id Int64, event_id UUID, session_id UUID, user_id Int32, movie_id Int32, "
    "device_type String, event_type String, position_ms Int64, event_ms Int64, received_ms Int64"
)


def label(events: int) -> str:
    return f"{events // 1_000_000}m" if events % 1_000_000 == 0 else f"{events // 1000}k"


def _rows(events: int) -> Iterator[Row]:
    days = max(1, events // EVENTS_PER_DAY)
    start_ms, end_ms = int((END - timedelta(days=days)).timestamp() * 1000), int(END.timestamp() * 1000)
    world = World(make_users(USERS), load_movies())
    return backfill_stream(SEED, world, Behaviour(), DIRTY_RATE, events, start_ms, end_ms, lambda _record: None)


def _fill_raw_tables(settings: Settings, events: int, scratch: Path) -> None:
    from loader.schema import ensure_raw_schema

    database = settings.warehouse.raw_database
    loaded_at = datetime.now(UTC)
    with warehouse_client(settings) as client:
        ensure_raw_schema(client, database)
        client.insert(
            f"{database}.users",
            [
                (u.user_id, u.display_name, u.country.code, u.country.utc_offset_minutes, u.plan, u.signed_up_at, 1)
                for u in make_users(USERS)
            ],
            column_names=[
                *("user_id", "display_name", "country_code", "utc_offset_minutes", "plan", "signed_up_at"),
                "_xid",
            ],
        )
        client.insert(
            f"{database}.movies",
            [(m.movie_id, m.title, m.release_year, m.genre, m.runtime_seconds, 1) for m in load_movies()],
            column_names=["movie_id", "title", "release_year", "genre", "runtime_seconds", "_xid"],
        )
        rows = _rows(events)
        chunk_file = scratch / "events.tsv"
        first_id = 1
        while chunk := list(islice(rows, CHUNK_ROWS)):
            chunk_file.write_text(
                "".join(
                    f"{first_id + n}\t{e.hex()}\t{s.hex()}\t{u}\t{m}\t{d}\t{t}\t{p}\t{ms}\t{received}\n"
                    for n, (e, s, u, m, d, t, p, ms, received) in enumerate(chunk)
                )
            )
            client.command(
                f"INSERT INTO {database}.viewing_events (id, event_id, session_id, user_id, movie_id, device_type,"
                " event_type, position_ms, event_time, received_at, _xid, _loaded_at)"
                " SELECT id, event_id, session_id, user_id, movie_id, device_type, event_type, position_ms,"
                " fromUnixTimestamp64Milli(event_ms, 'UTC'), fromUnixTimestamp64Milli(received_ms, 'UTC'),"
                f" intDiv(id, {BATCH_ROWS}) + 1, toDateTime64('{loaded_at:%Y-%m-%d %H:%M:%S}', 6, 'UTC')"
                f" FROM file('{chunk_file}', 'TabSeparated', '{EVENT_COLUMNS}')"
            )
            first_id += len(chunk)
        chunk_file.unlink(missing_ok=True)


def run(
    settings: Settings,
    cinema: Callable[..., subprocess.CompletedProcess[str]],
    sizes: Sequence[int] = (1_000_000, 10_000_000),
) -> dict[str, float]:
    """`cinema transform` seconds, full and incremental, for each number of raw events."""
    figures: dict[str, float] = {}
    for events in sizes:
        root = settings.state_dir / f"bench-dbt-{label(events)}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        warehouse = replace(settings.warehouse, chdb_path=root / "warehouse")
        overrides = {
            "CLICKHOUSE_CHDB_PATH": str(warehouse.chdb_path),
            "DBT_TARGET_PATH": str(root / "dbt-target"),
            "DBT_LOG_PATH": str(root / "dbt-logs"),
        }
        try:
            _fill_raw_tables(replace(settings, warehouse=warehouse), events, root)
            began = time.monotonic()
            cinema("transform", "--full-refresh", environment_overrides=overrides)
            figures[f"dbt_build_seconds_{label(events)}"] = time.monotonic() - began
            began = time.monotonic()
            cinema("transform", environment_overrides=overrides)
            figures[f"dbt_incremental_build_seconds_{label(events)}"] = time.monotonic() - began
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return figures
