"""The raw database in ClickHouse: the subscriber's three tables plus the loader's bookkeeping.

Names and types are a contract with dbt (`dbt_project/models/staging/_staging__sources.yml`);
codecs and indices are the loader's business. `ensure_raw_schema` is idempotent and is
the only code that creates these tables.

Why these choices:
- viewing_events is a MergeTree ordered by (session_id, event_time, id): sessionization
  reads whole sessions in time order, and per-session sorting makes the codecs pay
  (measured on 1M generated events: id DoubleDelta 0.66 MB vs 4.1 MB LZ4, event_time and
  position_ms Delta 0.2 MB vs 5.4/4.2 MB, user/movie ids ZSTD half of LZ4). Monthly
  partitions match the marts' date filters and keep parts few.
- `_xid` is the subscriber transaction that wrote the row; its minmax index lets the
  loader count and delete a window of transactions without reading the whole table.
- users and movies are ReplacingMergeTree(_xid): an update on the publisher arrives as a
  newer row with a higher `_xid`, and the newest version wins (read with FINAL).
- `_loaded_at` is when the row landed; `_loader_batches` holds the watermark (see
  loader/service.py) and `_quarantine` the rows ClickHouse cannot hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client

BATCHES_TABLE = "_loader_batches"
QUARANTINE_TABLE = "_quarantine"

# ClickHouse's documented DateTime64 range is [1900-01-01, 2299-12-31]; outside it values
# wrap or saturate depending on the function, and PostgreSQL's 'infinity' cannot be read
# at all. Rows with a timestamp outside this half-open range are quarantined, not loaded.
TIMESTAMP_RANGE = ("1900-01-01 00:00:00", "2300-01-01 00:00:00")


def table_ref(database: str, table: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(table)}"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    codec: str = ""

    def ddl(self) -> str:
        return f"{self.name} {self.type}" + (f" CODEC({self.codec})" if self.codec else "")


@dataclass(frozen=True)
class RawTable:
    """One subscriber table and its ClickHouse copy."""

    name: str
    # The publisher's primary key: how a quarantined row is named, and what the
    # per-batch check counts and sums.
    key: str
    # Same names, same order as on the subscriber (postgres_init/subscriber/10_tables.sql).
    columns: tuple[Column, ...]
    engine: str
    # Append-only on the publisher (events): a window's rows never change, so the batch
    # check can demand equality. Reference tables publish updates, which move a row to a
    # newer `_xid` (and out of an older window) at any time.
    append_only: bool
    indexes: tuple[str, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def timestamps(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.type.startswith("DateTime64"))

    def ddl(self, database: str) -> str:
        elements = [
            *(column.ddl() for column in self.columns),
            "_loaded_at DateTime64(6, 'UTC') DEFAULT now64(6) CODEC(ZSTD(1))",
            *self.indexes,
        ]
        body = ",\n    ".join(elements)
        return f"CREATE TABLE IF NOT EXISTS {table_ref(database, self.name)} (\n    {body}\n)\n{self.engine}"


XID = Column("_xid", "UInt64", "ZSTD(1)")

VIEWING_EVENTS = RawTable(
    name="viewing_events",
    key="id",
    columns=(
        Column("id", "Int64", "DoubleDelta, ZSTD(1)"),
        Column("event_id", "UUID"),
        Column("session_id", "UUID"),
        Column("user_id", "Int32", "ZSTD(1)"),
        Column("movie_id", "Int32", "ZSTD(1)"),
        Column("device_type", "LowCardinality(String)"),
        Column("event_type", "LowCardinality(String)"),
        Column("position_ms", "Int64", "Delta, ZSTD(1)"),
        Column("event_time", "DateTime64(3, 'UTC')", "Delta, ZSTD(1)"),
        Column("received_at", "DateTime64(6, 'UTC')", "ZSTD(1)"),
        XID,
    ),
    engine="ENGINE = MergeTree\nPARTITION BY toYYYYMM(event_time)\nORDER BY (session_id, event_time, id)",
    append_only=True,
    indexes=("INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1",),
)

USERS = RawTable(
    name="users",
    key="user_id",
    columns=(
        Column("user_id", "Int32"),
        Column("display_name", "String"),
        Column("country_code", "LowCardinality(String)"),
        Column("utc_offset_minutes", "Int16"),
        Column("plan", "LowCardinality(String)"),
        Column("signed_up_at", "DateTime64(6, 'UTC')"),
        XID,
    ),
    engine="ENGINE = ReplacingMergeTree(_xid)\nORDER BY user_id",
    append_only=False,
    indexes=("INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1",),
)

MOVIES = RawTable(
    name="movies",
    key="movie_id",
    columns=(
        Column("movie_id", "Int32"),
        Column("title", "String"),
        Column("release_year", "Int16"),
        Column("genre", "LowCardinality(String)"),
        Column("runtime_seconds", "Int32"),
        XID,
    ),
    engine="ENGINE = ReplacingMergeTree(_xid)\nORDER BY movie_id",
    append_only=False,
    indexes=("INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1",),
)

# Reference data first: a batch never lands events whose user or movie is missing.
RAW_TABLES = (USERS, MOVIES, VIEWING_EVENTS)


def bookkeeping_ddl(database: str) -> tuple[str, ...]:
    return (
        # One row per committed batch, appended after its data: max(watermark) is the
        # resume point. Every row with `_xid` below it is in the raw tables exactly once.
        f"""CREATE TABLE IF NOT EXISTS {table_ref(database, BATCHES_TABLE)} (
    from_xid UInt64,
    watermark UInt64,
    rows UInt64,
    events UInt64,
    quarantined UInt64,
    started_at DateTime64(6, 'UTC'),
    visible_at DateTime64(6, 'UTC'),
    loader String
)
ENGINE = MergeTree
ORDER BY watermark""",
        # Rows ClickHouse cannot hold, as the subscriber's JSON, named by table and key.
        f"""CREATE TABLE IF NOT EXISTS {table_ref(database, QUARANTINE_TABLE)} (
    table_name LowCardinality(String),
    row_key String,
    _xid UInt64,
    reason String,
    row_json String,
    quarantined_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY (table_name, _xid, row_key)""",
    )


def ensure_raw_schema(client: Client, database: str) -> None:
    """Create the raw database and its tables where missing; never alters what exists."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    for statement in (*(table.ddl(database) for table in RAW_TABLES), *bookkeeping_ddl(database)):
        client.command(statement)
