"""The producer against COPYs of the very same rows into an identical table.

The whole `cinema generate` process is timed (start-up, reference data, generation,
four concurrent writers). References, each into a fresh table with the same constraints:
- the producer's own writing without its generation: the identical rows packed chunk by
  chunk (timed) and committed by its four ChunkWriters (psycopg2, binary COPY), which is
  what the producer would reach if making the rows cost nothing;
- the fastest way to write them from Python: psycopg 3's binary COPY with the same four
  writers and the same chunk size, the rows already in the Python types COPY sends;
- generation alone: the same rows made and packed for COPY by the producer's own code,
  written nowhere, the producer's ceiling whatever the driver.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from cinema import db
from cinema.settings import Settings
from cinema.stack import apply_init
from producer.behaviour import Behaviour
from producer.binary_copy import copy_binary
from producer.catalog import load_movies, make_users
from producer.generate_events import chunks
from producer.stream import Row, World, backfill_stream
from producer.writer import ROW_COLUMNS, Chunk, ChunkWriters, ensure_reference_data

PRODUCER_DATABASE = "cinema_bench_producer"
COPY_DATABASE = "cinema_bench_copy"
END = datetime(2026, 11, 1, tzinfo=UTC)
START = END - timedelta(days=7)
SEED = 424242
USERS = 2000
WRITERS = 4
CHUNK_ROWS = 5_000
BINARY_TYPES = ("uuid", "uuid", "int4", "int4", "text", "text", "int8", "timestamptz", "timestamptz")


def _same_stream(events: int) -> Iterator[Row]:
    """The rows `cinema generate --seed SEED --events N` writes."""
    world = World(make_users(USERS), load_movies())
    start_ms, end_ms = int(START.timestamp() * 1000), int(END.timestamp() * 1000)
    return backfill_stream(SEED, world, Behaviour(), 0.0, events, start_ms, end_ms, lambda _record: None)


def _chunks(rows: Sequence[Any]) -> list[Sequence[Any]]:
    return [rows[start : start + CHUNK_ROWS] for start in range(0, len(rows), CHUNK_ROWS)]


def _generation_seconds(events: int) -> float:
    """Making the rows and packing them for COPY chunk by chunk, as the producer does, writing nowhere."""
    began = time.monotonic()
    for _chunk in chunks(_same_stream(events), CHUNK_ROWS, set()):
        pass
    return time.monotonic() - began


def _as_copy_values(row: Row) -> tuple[Any, ...]:
    return (
        uuid.UUID(bytes=row.event_id),
        uuid.UUID(bytes=row.session_id),
        row.user_id,
        row.movie_id,
        row.device_type,
        row.event_type,
        row.position_ms,
        *(datetime.fromtimestamp(ms / 1000, UTC) for ms in (row.event_time_ms, row.received_ms)),
    )


def _binary_copy_seconds(settings: Settings, database: str, rows: Sequence[Row]) -> float:
    """psycopg 3 binary COPY: WRITERS connections, one transaction per CHUNK_ROWS rows."""
    server = settings.publisher
    conninfo = psycopg.conninfo.make_conninfo(
        host=server.host, port=server.port, dbname=database, user=server.admin_user, password=server.admin_password
    )
    chunks: queue.Queue[Sequence[tuple[Any, ...]] | None] = queue.Queue()
    for chunk in _chunks([_as_copy_values(row) for row in rows]):
        chunks.put(chunk)
    for _ in range(WRITERS):
        chunks.put(None)
    connections = [psycopg.connect(conninfo) for _ in range(WRITERS)]
    errors: list[BaseException] = []
    statement = f"COPY viewing_events ({', '.join(ROW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

    def write(connection: psycopg.Connection[Any]) -> None:
        try:
            while (chunk := chunks.get()) is not None:
                with connection.cursor() as cursor, cursor.copy(statement) as copy:
                    copy.set_types(list(BINARY_TYPES))
                    for values in chunk:
                        copy.write_row(values)
                connection.commit()
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=write, args=(connection,)) for connection in connections]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - began
    for connection in connections:
        connection.close()
    if errors:
        raise errors[0]
    return seconds


def _producer_writers_seconds(settings: Settings, database: str, rows: Sequence[Row]) -> float:
    """The rows packed chunk by chunk and committed by the producer's ChunkWriters."""
    server = settings.publisher
    began = time.monotonic()
    writers = ChunkWriters(
        lambda: db.connect(server, server.admin_user, server.admin_password, database=database), "bench", WRITERS
    )
    try:
        for number, chunk in enumerate(_chunks(rows)):
            writers.submit(Chunk(number, *copy_binary(chunk)))
    finally:
        writers.close()
    return time.monotonic() - began


def _fresh_database(settings: Settings, name: str) -> None:
    """A database on the publisher set up exactly like the publisher's own (postgres_init/),
    but not replicated, so both contenders pay the same costs: constraints, keys, WAL."""
    db.run_as_admin(
        settings, "publisher", f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}", database="postgres"
    )
    apply_init(replace(settings, publisher=replace(settings.publisher, database=name)), "publisher")


def _fresh_copy_database(settings: Settings) -> None:
    """The references' database, with the reference data the producer writes before its events."""
    _fresh_database(settings, COPY_DATABASE)
    with db.closing(db.admin(settings, "publisher", database=COPY_DATABASE)) as connection:
        ensure_reference_data(connection, make_users(USERS), load_movies())


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

    rows = list(_same_stream(events))
    _fresh_copy_database(settings)
    copy_seconds = _producer_writers_seconds(settings, COPY_DATABASE, rows)
    _drop_database(settings, COPY_DATABASE)

    _fresh_copy_database(settings)
    binary_seconds = _binary_copy_seconds(settings, COPY_DATABASE, rows)
    _drop_database(settings, COPY_DATABASE)
    generation_seconds = _generation_seconds(events)
    return {
        "producer_events_per_second": events / producer_seconds,
        "raw_copy_events_per_second": events / copy_seconds,
        "producer_to_copy_ratio": copy_seconds / producer_seconds,
        "copy_binary_events_per_second": events / binary_seconds,
        "producer_to_copy_binary_ratio": binary_seconds / producer_seconds,
        "generation_events_per_second": events / generation_seconds,
        "generation_to_copy_binary_ratio": binary_seconds / generation_seconds,
    }
