"""The ClickHouse side: pulling a window, reading back what landed, recording it, recovering.

ClickHouse pulls the rows itself through its `postgresql()` table function (measured
faster than fetching them in Python; see bench/loader.py); the loader only decides the
window. The `WHERE` on `_xid` and on the timestamps is pushed down to the subscriber,
which uses its `_xid` index and never sends a row ClickHouse could not parse.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.binding import format_str
from clickhouse_connect.driver.client import Client

from cinema.names import BATCHES_TABLE, QUARANTINE_TABLE
from cinema.settings import Settings
from loader.schema import (
    EPOCHS_TABLE,
    MOVIES,
    RAW_TABLES,
    TIMESTAMP_RANGE,
    USERS,
    VIEWING_EVENTS,
    RawTable,
    delete_target,
    on_cluster,
    table_ref,
)
from loader.source import CLICKHOUSE_FIGURES, EventWindow, Identity, IdFigures, RejectedRow, figures_of, xid_window

log = logging.getLogger(__name__)

# Every statement that writes to a raw database carries `cinema-loader-<database>-` and a
# 12-digit hex tag in its query id, so recovery can find and stop one that outlived its
# client (a ClickHouse server keeps running an INSERT after the HTTP connection that sent
# it is gone) without touching the loader of another raw database on the same server.
QUERY_ID_PREFIX = "cinema-loader-"
# The last record's `dedup_until` while the subscription's initial copies still run:
# where the re-load ends is known only once they have finished.
DEDUP_PENDING = 2**64 - 1
INSERT_BLOCK_ROWS = 131_072
# Every statement of the loader's clients on a cluster (README, "Scaling out past one
# machine"): an INSERT returns only once every shard holds its rows, on a majority of the
# shard's replicas (with two replicas, both: the checks then see them on any replica),
# and a window loaded again after recovery is never dropped as a copy of a deleted block.
CLUSTER_CLIENT_SETTINGS = {"distributed_foreground_insert": 1, "insert_quorum": "auto", "insert_deduplicate": 0}


@dataclass(frozen=True)
class PullSource:
    """How ClickHouse reaches the subscriber, as the least-privilege loader role."""

    address: str
    database: str
    user: str
    password: str

    def table_function(self, table: str) -> str:
        arguments = (self.address, self.database, table, self.user, self.password)
        return f"postgresql({', '.join(format_str(argument) for argument in arguments)})"

    def scrub(self, text: str) -> str:
        """ClickHouse may echo the statement in an error; the password never reaches a log."""
        return text.replace(self.password, "***") if self.password else text


def pull_source(settings: Settings) -> PullSource:
    return PullSource(
        settings.warehouse.subscriber_address,
        settings.subscriber.database,
        "cinema_loader",
        settings.roles.loader_password,
    )


def query_id_prefix(database: str) -> str:
    return f"{QUERY_ID_PREFIX}{database}-"


def query_id_pattern(database: str) -> str:
    """The query ids of this raw database's loader and no other's (a database named like
    `<database>-2` shares the prefix, not the hex tag right after it)."""
    return "^" + re.escape(query_id_prefix(database)) + "[0-9a-f]{12}-"


def _write_id(fence: Fence, what: str) -> str:
    return f"{query_id_prefix(fence.database)}{uuid.uuid4().hex[:12]}-{what}"


@dataclass(frozen=True)
class Fence:
    """The epoch a loader attached with: every write it makes lands only while that
    epoch is the highest in `_loader_epochs` (README, "Why exactly once")."""

    database: str
    epoch: int

    def condition(self) -> str:
        return f"(SELECT max(epoch) FROM {table_ref(self.database, EPOCHS_TABLE)}) = {int(self.epoch)}"


def current_epoch(client: Client, database: str) -> int:
    return _number(client, f"SELECT max(epoch) FROM {table_ref(database, EPOCHS_TABLE)}")


def new_epoch(client: Client, database: str, loader: str) -> Fence:
    """Claim the next epoch (the caller holds the advisory lock: no other attach runs)."""
    epochs = table_ref(database, EPOCHS_TABLE)
    client.command(f"INSERT INTO {epochs} (epoch, loader) SELECT max(epoch) + 1, {format_str(loader)} FROM {epochs}")
    return Fence(database, current_epoch(client, database))


def _valid(table: RawTable) -> str:
    low, high = TIMESTAMP_RANGE
    return "".join(f" AND {column} >= '{low}' AND {column} < '{high}'" for column in table.timestamps)


def pull(
    client: Client,
    source: PullSource,
    fence: Fence,
    table: RawTable,
    lo: int,
    hi: int,
    new_ids_within: tuple[int, int] | None = None,
) -> None:
    """INSERT ... SELECT one table's window straight from the subscriber. With
    `new_ids_within` (a re-load), only events whose id the raw table does not hold yet:
    the id range bounds the lookup to the parts that overlap it (id's minmax index)."""
    columns = ", ".join(table.column_names)
    target = table_ref(fence.database, table.name)
    new_only = ""
    if new_ids_within is not None:
        low, high = new_ids_within
        new_only = f" AND id NOT IN (SELECT id FROM {target} WHERE id BETWEEN {int(low)} AND {int(high)})"
    client.command(
        f"INSERT INTO {target} ({columns}) "
        f"SELECT {columns} FROM {source.table_function(table.name)} WHERE {xid_window(lo, hi)}{_valid(table)}"
        f"{new_only} AND {fence.condition()}",
        settings={
            "query_id": _write_id(fence, f"{table.name}-{lo}-{hi}"),
            # Events far in the past or future may touch many monthly partitions; that
            # is the data's business, not a reason to fail the batch.
            "throw_on_max_partitions_per_insert_block": 0,
            # Blocks of 128k rows instead of ~1M: measured 90 MB less peak RSS in chdb,
            # at the same speed (more, smaller parts, which merges absorb).
            "max_insert_block_size": INSERT_BLOCK_ROWS,
            "min_insert_block_size_rows": INSERT_BLOCK_ROWS,
        },
    )


@dataclass(frozen=True)
class Loaded:
    rows: int
    keys: int


def loaded(client: Client, database: str, table: RawTable, lo: int, hi: int) -> Loaded:
    """Rows and distinct keys of a reference table's window (versions of a row can repeat)."""
    result = client.query(
        f"SELECT count(), uniqExact({table.key}) FROM {table_ref(database, table.name)} WHERE {xid_window(lo, hi)}"
    )
    rows, distinct = result.result_rows[0]
    return Loaded(int(rows), int(distinct))


def event_figures(client: Client, database: str, lo: int, hi: int) -> IdFigures:
    """The loaded events of the window [lo, hi), by `_xid`."""
    result = client.query(
        f"SELECT {CLICKHOUSE_FIGURES} FROM {table_ref(database, VIEWING_EVENTS.name)} WHERE {xid_window(lo, hi)}"
    )
    return figures_of(result.result_rows[0])


def event_figures_by_id(client: Client, source: PullSource, database: str, window: EventWindow, lo: int) -> IdFigures:
    """What the raw table holds of the subscriber's window [lo, window.hi), by event id
    (whatever `_xid` it was loaded with): a re-load's check."""
    result = client.query(
        f"SELECT {CLICKHOUSE_FIGURES} FROM {table_ref(database, VIEWING_EVENTS.name)} "
        f"WHERE id BETWEEN {int(window.min_id)} AND {int(window.max_id)} AND id IN "
        f"(SELECT id FROM {source.table_function(VIEWING_EVENTS.name)} WHERE {xid_window(lo, window.hi)})"
    )
    return figures_of(result.result_rows[0])


def received_at_sample(client: Client, database: str, lo: int, hi: int, size: int = 3) -> dict[int, int]:
    """A few loaded events' received_at in epoch microseconds, to compare with the subscriber."""
    result = client.query(
        f"SELECT id, toUnixTimestamp64Micro(received_at) FROM {table_ref(database, 'viewing_events')} "
        f"WHERE {xid_window(lo, hi)} LIMIT {int(size)}"
    )
    return {int(key): int(micros) for key, micros in result.result_rows}


QUARANTINE_STRUCTURE = "table_name String, row_key String, _xid UInt64, reason String, row_json String"


def quarantined_keys(client: Client, database: str, table: str, keys: Sequence[str]) -> set[str]:
    """Which of these keys of `table` are quarantined already (a re-load skips them)."""
    if not keys:
        return set()
    listed = ", ".join(format_str(key) for key in keys)
    result = client.query(
        f"SELECT DISTINCT row_key FROM {table_ref(database, QUARANTINE_TABLE)} "
        f"WHERE table_name = {format_str(table)} AND row_key IN ({listed})"
    )
    return {str(row[0]) for row in result.result_rows}


def quarantine(client: Client, fence: Fence, rows: Sequence[RejectedRow]) -> None:
    payload = "\n".join(
        json.dumps(
            {
                "table_name": row.table,
                "row_key": row.key,
                "_xid": row.xid,
                "reason": row.reason,
                "row_json": row.row_json,
            }
        )
        for row in rows
    )
    # A command, not client.insert(): the HTTP client retries inserts on its own, and a
    # retried insert whose first attempt landed would quarantine a row twice. The rows
    # travel inside the statement so that the fence can guard it like every other write.
    client.command(
        f"INSERT INTO {table_ref(fence.database, QUARANTINE_TABLE)} (table_name, row_key, _xid, reason, row_json) "
        f"SELECT * FROM format(JSONEachRow, {format_str(QUARANTINE_STRUCTURE)}, {format_str(payload)}) "
        f"WHERE {fence.condition()}",
        settings={"query_id": _write_id(fence, "quarantine")},
    )


@dataclass(frozen=True)
class Position:
    """Where loading stands: the last record of `_loader_batches`."""

    watermark: int
    sequence: int
    # Windows below this are re-loads (0: none).
    dedup_until: int
    subscriber: Identity
    kind: str

    @property
    def deduplicating(self) -> bool:
        return self.watermark < self.dedup_until


@dataclass(frozen=True)
class BatchRecord:
    from_xid: int
    position: Position
    rows: int = 0
    events: int = 0
    quarantined: int = 0
    started_at_micros: int = 0
    visible_at_micros: int = 0
    loader: str = ""
    max_xid: int = 0


def record_batch(client: Client, fence: Fence, batch: BatchRecord) -> None:
    """Commit a batch (or a rewind): one single-row insert, which either lands whole or not at all."""
    position = batch.position
    subscriber = position.subscriber
    values = (
        f"{batch.from_xid}, {position.watermark}, {batch.rows}, {batch.events}, {batch.quarantined}, "
        f"fromUnixTimestamp64Micro({batch.started_at_micros}, 'UTC'), "
        f"fromUnixTimestamp64Micro({batch.visible_at_micros}, 'UTC'), {format_str(batch.loader)}, "
        f"{position.sequence}, {format_str(position.kind)}, {position.dedup_until}, "
        f"{subscriber.system_identifier}, {subscriber.subscription_oid}, {subscriber.started_at_micros}, "
        f"{fence.epoch}, {batch.max_xid}"
    )
    client.command(
        f"INSERT INTO {table_ref(fence.database, BATCHES_TABLE)} "
        "(from_xid, watermark, rows, events, quarantined, started_at, visible_at, loader, sequence, kind, "
        "dedup_until, system_identifier, subscription_oid, subscriber_started_micros, epoch, max_xid) "
        f"SELECT {values} WHERE {fence.condition()}",
        settings={"query_id": _write_id(fence, f"{position.kind}-{batch.from_xid}-{position.watermark}")},
    )


def _number(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def position(client: Client, database: str) -> Position | None:
    """The last record, or None before the first batch."""
    result = client.query(
        "SELECT watermark, sequence, dedup_until, system_identifier, subscription_oid, subscriber_started_micros, "
        f"kind FROM {table_ref(database, BATCHES_TABLE)} ORDER BY sequence DESC, watermark DESC LIMIT 1"
    )
    if not result.result_rows:
        return None
    watermark, sequence, dedup_until, system_identifier, oid, started, kind = result.result_rows[0]
    return Position(
        int(watermark),
        int(sequence),
        int(dedup_until),
        Identity(int(system_identifier), int(oid), int(started)),
        str(kind),
    )


def resume_point(client: Client, database: str) -> int:
    """The committed watermark: every row below it is loaded exactly once."""
    last = position(client, database)
    return 0 if last is None else last.watermark


def highest_loaded_xid(client: Client, database: str) -> int | None:
    """The highest `_xid` of any row in the raw tables or the quarantine."""
    highs = ", ".join(
        f"(SELECT max(_xid) FROM {table_ref(database, table)})"
        for table in (*(table.name for table in RAW_TABLES), QUARANTINE_TABLE)
    )
    counts = " + ".join(
        f"(SELECT count() FROM {table_ref(database, table)})"
        for table in (*(table.name for table in RAW_TABLES), QUARANTINE_TABLE)
    )
    result = client.query(f"SELECT greatest({highs}), {counts}")
    high, rows = result.result_rows[0]
    return int(high) if int(rows) else None


def highest_xid_since_resync(client: Client, database: str) -> int:
    """The highest `_xid` loaded from the current subscriber: in the batches since the last
    resync (rows loaded before it may come from another cluster's xid space)."""
    batches = table_ref(database, BATCHES_TABLE)
    return _number(
        client,
        f"SELECT max(max_xid) FROM {batches} WHERE sequence >= "
        f"(SELECT max(sequence) FROM {batches} WHERE kind = 'resync')",
    )


def kill_statement(database: str, cluster: str = "") -> str:
    """Stops every statement of this raw database's loader still running. On a cluster, on
    every node: a shard's part of a distributed INSERT has its own query id and the
    loader's as its initial one."""
    query_id = "initial_query_id" if cluster else "query_id"
    return f"KILL QUERY{on_cluster(cluster)} WHERE match({query_id}, {format_str(query_id_pattern(database))}) SYNC"


def delete_statement(database: str, table: str, resume: int, cluster: str = "") -> str:
    return f"DELETE FROM {delete_target(database, table, cluster)} WHERE _xid >= {int(resume)}"


def recover(client: Client, database: str, cluster: str = "") -> Position | None:
    """Undo whatever a failed or interrupted batch left behind; return where loading stands.

    Rows at or above the committed watermark can only come from a batch whose
    watermark row never landed, so they are deleted and the window is loaded again.
    A statement of a previous attempt still running on a server is stopped first, so
    it cannot land rows after the delete. During a re-load, rows above the watermark may
    be older loads of the same events: nothing is deleted then, since a re-load skips
    the events already there and its check is by event id.
    """
    client.command(kill_statement(database, cluster))
    last = position(client, database)
    if last is not None and last.deduplicating:
        return last
    resume = 0 if last is None else last.watermark
    for table in (*(table.name for table in RAW_TABLES), QUARANTINE_TABLE):
        leftover = _number(client, f"SELECT count() FROM {table_ref(database, table)} WHERE _xid >= {resume}")
        if leftover:
            log.warning(
                "removing %d rows of an uncommitted batch from %s", leftover, table, extra={"watermark": resume}
            )
        # On a cluster the count reads one replica per shard, which may not have fetched a
        # part yet; the replicated DELETE reaches that part wherever it is.
        if leftover or cluster:
            client.command(delete_statement(database, table, resume, cluster), settings={"lightweight_deletes_sync": 2})
    return last


def delete_reference_rows(client: Client, database: str, cluster: str = "") -> None:
    """Before a resync: the subscriber's new xids may be lower than the loaded versions'
    (a rebuilt cluster), which would win under FINAL. The resync loads every current
    version again."""
    for table in (USERS, MOVIES):
        client.command(delete_statement(database, table.name, 0, cluster), settings={"lightweight_deletes_sync": 2})


def database_uuid(client: Client, database: str) -> str:
    """The raw database's identity, the same whichever address or host reaches it."""
    result = client.query(f"SELECT toString(uuid) FROM system.databases WHERE name = {format_str(database)}")
    return str(result.result_rows[0][0])


def lock_identity(client: Client, database: str, cluster: str = "") -> str:
    """What the one-loader-per-raw-database lock is named after. Every node of a cluster
    has its own database UUID, so there the cluster and database names stand for it."""
    name = f"{cluster}/{database}" if cluster else database_uuid(client, database)
    return f"cinema-loader/{name}"


def progress(client: Client, database: str) -> dict[str, object]:
    """Raw row counts and the committed watermark, for `cinema stack status`."""
    tables = f"SELECT count() FROM system.tables WHERE database = {format_str(database)}"
    if not _number(client, f"{tables} AND name = {format_str(BATCHES_TABLE)}"):
        return {"raw_database": database, "loaded": "nothing yet"}
    counts = {
        table.name: _number(client, f"SELECT count() FROM {table_ref(database, table.name)}") for table in RAW_TABLES
    }
    batches = client.query(
        f"SELECT count(), max(visible_at) FROM {table_ref(database, BATCHES_TABLE)} WHERE kind IN ('batch', '')"
    ).result_rows[0]
    quarantined = _number(client, f"SELECT count() FROM {table_ref(database, QUARANTINE_TABLE)}")
    last = position(client, database)
    return {
        "raw_database": database,
        "rows": counts,
        "watermark": 0 if last is None else last.watermark,
        "reloading": bool(last and last.deduplicating),
        "batches": int(batches[0]),
        "last_batch_at": f"{batches[1]:%Y-%m-%d %H:%M:%S} UTC" if batches[0] else None,
        "quarantined": quarantined,
    }
