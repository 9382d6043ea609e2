"""The producer against a raw COPY of the very same rows into an identical table.

The whole `cinema generate` process is timed (start-up, reference data, generation,
four concurrent writers); the reference is one COPY of the identical rows, already
formatted, into a table with the same constraints.
"""

from __future__ import annotations

import io
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cinema import db
from cinema.settings import Settings
from cinema.stack import apply_init
from producer.behaviour import Behaviour
from producer.catalog import load_movies, make_users
from producer.stream import World, backfill_stream
from producer.writer import COPY_EVENTS, copy_text, ensure_reference_data

PRODUCER_DATABASE = "cinema_bench_producer"
COPY_DATABASE = "cinema_bench_copy"
END = datetime(2026, 11, 1, tzinfo=UTC)
START = END - timedelta(days=7)
SEED = 424242
USERS = 2000


def _same_rows_as_copy_text(events: int) -> str:
    """The rows `cinema generate --seed SEED --events N` writes, in COPY text format."""
    world = World(make_users(USERS), load_movies())
    start_ms, end_ms = int(START.timestamp() * 1000), int(END.timestamp() * 1000)
    return copy_text(backfill_stream(SEED, world, Behaviour(), 0.0, events, start_ms, end_ms, lambda _record: None))


def _fresh_database(settings: Settings, name: str) -> None:
    """A database on the publisher set up exactly like the publisher's own (postgres_init/),
    but not replicated, so both contenders pay the same costs: constraints, keys, WAL."""
    db.run_as_admin(
        settings, "publisher", f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}", database="postgres"
    )
    apply_init(replace(settings, publisher=replace(settings.publisher, database=name)), "publisher")


def _drop_database(settings: Settings, name: str) -> None:
    db.run_as_admin(settings, "publisher", f"DROP DATABASE {name} WITH (FORCE)", database="postgres")


def run(settings: Settings, cinema: Callable[..., subprocess.CompletedProcess[str]], events: int) -> dict[str, float]:
    _fresh_database(settings, PRODUCER_DATABASE)
    began = time.monotonic()
    result = cinema(
        "generate",
        "--events",
        str(events),
        "--seed",
        str(SEED),
        "--users",
        str(USERS),
        "--writers",
        "4",
        "--start",
        f"{START:%Y-%m-%d}",
        "--end",
        f"{END:%Y-%m-%d}",
        environment_overrides={"POSTGRES_PUBLICIST_DB": PRODUCER_DATABASE},
    )
    producer_seconds = time.monotonic() - began
    written = int(re.search(r"(\d+) events written", result.stdout).group(1))  # type: ignore[union-attr]
    if written != events:
        raise RuntimeError(f"the producer wrote {written} events, expected {events}: {result.stdout}")
    _drop_database(settings, PRODUCER_DATABASE)

    text = _same_rows_as_copy_text(events)
    _fresh_database(settings, COPY_DATABASE)
    with db.closing(db.admin(settings, "publisher", database=COPY_DATABASE)) as connection:
        connection.autocommit = False
        ensure_reference_data(connection, make_users(USERS), load_movies())
        began = time.monotonic()
        with connection.cursor() as cursor:
            cursor.copy_expert(COPY_EVENTS, io.StringIO(text), size=1 << 20)
        connection.commit()
        copy_seconds = time.monotonic() - began
    _drop_database(settings, COPY_DATABASE)
    return {
        "producer_events_per_second": events / producer_seconds,
        "raw_copy_events_per_second": events / copy_seconds,
        "producer_to_copy_ratio": copy_seconds / producer_seconds,
    }
