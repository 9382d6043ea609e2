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
  loader/protocol.py) and `_quarantine` the rows ClickHouse cannot hold.

On a cluster (CLICKHOUSE_CLUSTER), every statement runs ON CLUSTER and the tables keep
their names, so the loader's queries and dbt's sources stay the same:
- viewing_events is sharded by cityHash64(session_id), so a session's events stay on one
  shard: `viewing_events_local` is a ReplicatedMergeTree per shard, and `viewing_events`
  the Distributed table everything reads and writes through.
- users, movies and the bookkeeping tables are small: each is one replicated table whose
  replicas are all the nodes, so any node joins events to them locally and the loader
  reads its watermark on the node it writes to.
Without a cluster the statements are exactly the single-server ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.binding import format_str, quote_identifier
from clickhouse_connect.driver.client import Client

from cinema.names import BATCHES_TABLE, QUARANTINE_TABLE

EPOCHS_TABLE = "_loader_epochs"

# A sharded table's rows live in `<name>_local` on every shard (dbt-clickhouse's suffix too).
LOCAL_SUFFIX = "_local"
# Keeper paths of the replicated tables (the server fills in the macros): a sharded
# table's replicas share one path per shard; a table on every node, one path in all.
SHARD_REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
EVERY_NODE_REPLICA_PATH = "/clickhouse/tables/all/{database}/{table}"

# ClickHouse's documented DateTime64 range is [1900-01-01, 2299-12-31]; outside it values
# wrap or saturate depending on the function, and PostgreSQL's 'infinity' cannot be read
# at all. Rows with a timestamp outside this half-open range are quarantined, not loaded.
TIMESTAMP_RANGE = ("1900-01-01 00:00:00", "2300-01-01 00:00:00")


def table_ref(database: str, table: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(table)}"


def on_cluster(cluster: str) -> str:
    """The clause that runs a statement on every node of `cluster`; nothing on one server."""
    return f" ON CLUSTER {format_str(cluster)}" if cluster else ""


def create_table(database: str, name: str, elements: Sequence[str], engine: str, cluster: str = "") -> str:
    body = ",\n    ".join(elements)
    return f"CREATE TABLE IF NOT EXISTS {table_ref(database, name)}{on_cluster(cluster)} (\n    {body}\n)\n{engine}"


@dataclass(frozen=True)
class MergeTreeEngine:
    """A MergeTree-family engine with its clauses; given a Keeper path, its Replicated twin."""

    family: str
    clauses: str
    # ReplacingMergeTree's version column.
    version: str = ""

    def ddl(self, replica_path: str = "") -> str:
        arguments = [format_str(replica_path), format_str("{replica}")] if replica_path else []
        if self.version:
            arguments.append(self.version)
        name = f"Replicated{self.family}" if replica_path else self.family
        return f"ENGINE = {name}" + (f"({', '.join(arguments)})" if arguments else "") + f"\n{self.clauses}"


def table_ddl(
    database: str, cluster: str, name: str, elements: Sequence[str], merge_tree: MergeTreeEngine, sharding_key: str = ""
) -> tuple[str, ...]:
    """One table's CREATE statements. On a cluster, a sharded table is a replicated
    `<name>_local` per shard behind the Distributed table `name`; any other, one replicated
    table with every node a replica."""
    if not cluster:
        return (create_table(database, name, elements, merge_tree.ddl()),)
    if not sharding_key:
        return (create_table(database, name, elements, merge_tree.ddl(EVERY_NODE_REPLICA_PATH), cluster),)
    local = name + LOCAL_SUFFIX
    distributed = f"Distributed({format_str(cluster)}, {format_str(database)}, {format_str(local)}, {sharding_key})"
    return (
        create_table(database, local, elements, merge_tree.ddl(SHARD_REPLICA_PATH), cluster),
        f"CREATE TABLE IF NOT EXISTS {table_ref(database, name)}{on_cluster(cluster)} AS {table_ref(database, local)}"
        f"\nENGINE = {distributed}",
    )


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
    merge_tree: MergeTreeEngine
    # Append-only on the publisher (events): a window's rows never change, so the batch
    # check can demand equality. Reference tables publish updates, which move a row to a
    # newer `_xid` (and out of an older window) at any time.
    append_only: bool
    indexes: tuple[str, ...] = ()
    # On a cluster, the shard a row goes to; empty: every node holds every row.
    sharding_key: str = ""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def timestamps(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.type.startswith("DateTime64"))

    @property
    def engine(self) -> str:
        return self.merge_tree.ddl()

    @property
    def elements(self) -> tuple[str, ...]:
        return (
            *(column.ddl() for column in self.columns),
            "_loaded_at DateTime64(6, 'UTC') DEFAULT now64(6) CODEC(ZSTD(1))",
            *self.indexes,
        )

    def ddl(self, database: str) -> str:
        return create_table(database, self.name, self.elements, self.engine)

    def statements(self, database: str, cluster: str) -> tuple[str, ...]:
        return table_ddl(database, cluster, self.name, self.elements, self.merge_tree, self.sharding_key)


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
    merge_tree=MergeTreeEngine("MergeTree", "PARTITION BY toYYYYMM(event_time)\nORDER BY (session_id, event_time, id)"),
    append_only=True,
    # id's minmax index: a re-load's duplicate filter (`id NOT IN` the window's id range)
    # reads only the parts whose ids overlap the window.
    indexes=("INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1", "INDEX id_minmax id TYPE minmax GRANULARITY 1"),
    # A session's events on one shard: sessionizing one needs no other shard.
    sharding_key="cityHash64(session_id)",
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
    merge_tree=MergeTreeEngine("ReplacingMergeTree", "ORDER BY user_id", version="_xid"),
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
    merge_tree=MergeTreeEngine("ReplacingMergeTree", "ORDER BY movie_id", version="_xid"),
    append_only=False,
    indexes=("INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1",),
)

# Reference data first: a batch never lands events whose user or movie is missing.
RAW_TABLES = (USERS, MOVIES, VIEWING_EVENTS)
SHARDED_TABLES = frozenset(table.name for table in RAW_TABLES if table.sharding_key)


@dataclass(frozen=True)
class Bookkeeping:
    """A table of the loader's own."""

    name: str
    elements: tuple[str, ...]
    merge_tree: MergeTreeEngine


# Columns of `_loader_batches` added after its first release: `ensure_raw_schema` adds
# them to an older table, where they read 0 (an identity unknown, which stops the loader).
BATCH_RECORD_COLUMNS = (
    # The record's place in order (a rewind or resync lowers the watermark, so the last
    # record, not the highest watermark, is the resume point), and what it is.
    "sequence UInt64",
    "kind LowCardinality(String)",
    # While the watermark is below this, windows are re-loads, idempotent by event id.
    "dedup_until UInt64",
    # The subscriber the watermark's xids belong to (loader/source.py, Identity).
    "system_identifier Int64",
    "subscription_oid UInt64",
    "subscriber_started_micros Int64",
    # The fencing epoch of the loader that wrote the record.
    "epoch UInt64",
    # The highest `_xid` of the rows the batch loaded or quarantined (0: none): after a
    # crash, recovery's next xid is above it (README, "Why exactly once").
    "max_xid UInt64",
)

BOOKKEEPING = (
    # One row per committed batch, appended after its data, and one per rewind or resync
    # of the watermark: the last record's watermark is the resume point.
    Bookkeeping(
        BATCHES_TABLE,
        (
            "from_xid UInt64",
            "watermark UInt64",
            "rows UInt64",
            "events UInt64",
            "quarantined UInt64",
            "started_at DateTime64(6, 'UTC')",
            "visible_at DateTime64(6, 'UTC')",
            "loader String",
            *BATCH_RECORD_COLUMNS,
        ),
        MergeTreeEngine("MergeTree", "ORDER BY watermark"),
    ),
    # Rows ClickHouse cannot hold, as the subscriber's JSON, named by table and key.
    Bookkeeping(
        QUARANTINE_TABLE,
        (
            "table_name LowCardinality(String)",
            "row_key String",
            "_xid UInt64",
            "reason String",
            "row_json String",
            "quarantined_at DateTime64(6, 'UTC') DEFAULT now64(6)",
        ),
        MergeTreeEngine("MergeTree", "ORDER BY (table_name, _xid, row_key)"),
    ),
    # One row per attach of a loader: every write of the loader carries the condition
    # that its epoch is still the highest, so a loader that lost its lock writes nothing
    # once the next one has attached.
    Bookkeeping(
        EPOCHS_TABLE,
        ("epoch UInt64", "loader String", "started_at DateTime64(6, 'UTC') DEFAULT now64(6)"),
        MergeTreeEngine("MergeTree", "ORDER BY epoch"),
    ),
)


def bookkeeping_ddl(database: str, cluster: str = "") -> tuple[str, ...]:
    return tuple(
        statement
        for table in BOOKKEEPING
        for statement in table_ddl(database, cluster, table.name, table.elements, table.merge_tree)
    )


def raw_schema_ddl(database: str, cluster: str = "") -> tuple[str, ...]:
    """The statements that create the raw database and its tables, in order."""
    return (
        f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}{on_cluster(cluster)}",
        *(statement for table in RAW_TABLES for statement in table.statements(database, cluster)),
        *bookkeeping_ddl(database, cluster),
    )


def delete_target(database: str, table: str, cluster: str = "") -> str:
    """Where a DELETE of `table`'s rows goes: the table itself, or for a sharded table on a
    cluster, its local table on every node (ClickHouse cannot delete through a Distributed table)."""
    if cluster and table in SHARDED_TABLES:
        return table_ref(database, table + LOCAL_SUFFIX) + on_cluster(cluster)
    return table_ref(database, table)


def upgrade_ddl(database: str, cluster: str = "") -> tuple[str, ...]:
    """The bookkeeping columns a `_loader_batches` of an older release lacks."""
    added = ", ".join(f"ADD COLUMN IF NOT EXISTS {column}" for column in BATCH_RECORD_COLUMNS)
    return (f"ALTER TABLE {table_ref(database, BATCHES_TABLE)}{on_cluster(cluster)} {added}",)


def ensure_raw_schema(client: Client, database: str, cluster: str = "") -> None:
    """Create the raw database and its tables where missing; the only change to what
    exists is adding the loader's bookkeeping columns of later releases."""
    for statement in (*raw_schema_ddl(database, cluster), *upgrade_ddl(database, cluster)):
        client.command(statement)
