"""The ClickHouse side: pulling a window, reading back what landed, recording it, recovering.

ClickHouse pulls the rows itself through its `postgresql()` table function (measured
faster than fetching them in Python; see bench/loader.py); the loader only decides the
window. The `WHERE` on `_xid` and on the timestamps is pushed down to the subscriber,
which uses its `_xid` index and never sends a row ClickHouse could not parse.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.binding import format_str
from clickhouse_connect.driver.client import Client

from cinema.settings import Settings
from loader.schema import (
    BATCHES_TABLE,
    QUARANTINE_TABLE,
    RAW_TABLES,
    TIMESTAMP_RANGE,
    RawTable,
    delete_target,
    on_cluster,
    table_ref,
)
from loader.source import RejectedRow, xid_window

log = logging.getLogger(__name__)

# Every statement that writes to the raw database carries this prefix in its query id, so
# recovery can find and stop one that outlived its client (a ClickHouse server keeps
# running an INSERT after the HTTP connection that sent it is gone).
QUERY_ID_PREFIX = "cinema-loader-"
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


def _write_id(what: str) -> str:
    return f"{QUERY_ID_PREFIX}{what}-{uuid.uuid4().hex[:12]}"


def _valid(table: RawTable) -> str:
    low, high = TIMESTAMP_RANGE
    return "".join(f" AND {column} >= '{low}' AND {column} < '{high}'" for column in table.timestamps)


def pull(client: Client, source: PullSource, database: str, table: RawTable, lo: int, hi: int) -> None:
    """INSERT ... SELECT one table's window straight from the subscriber."""
    columns = ", ".join(table.column_names)
    client.command(
        f"INSERT INTO {table_ref(database, table.name)} ({columns}) "
        f"SELECT {columns} FROM {source.table_function(table.name)} WHERE {xid_window(lo, hi)}{_valid(table)}",
        settings={
            "query_id": _write_id(f"{table.name}-{lo}-{hi}"),
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
    key_sum: int


def loaded(client: Client, database: str, table: RawTable, lo: int, hi: int) -> Loaded:
    # Distinct keys only matter where versions of a row can repeat (reference tables).
    keys = "count()" if table.append_only else f"uniqExact({table.key})"
    result = client.query(
        f"SELECT count(), {keys}, sum({table.key}) FROM {table_ref(database, table.name)} WHERE {xid_window(lo, hi)}"
    )
    rows, distinct, key_sum = result.result_rows[0]
    return Loaded(int(rows), int(distinct), int(key_sum))


def received_at_sample(client: Client, database: str, lo: int, hi: int, size: int = 3) -> dict[int, int]:
    """A few loaded events' received_at in epoch microseconds, to compare with the subscriber."""
    result = client.query(
        f"SELECT id, toUnixTimestamp64Micro(received_at) FROM {table_ref(database, 'viewing_events')} "
        f"WHERE {xid_window(lo, hi)} LIMIT {int(size)}"
    )
    return {int(key): int(micros) for key, micros in result.result_rows}


def quarantine(client: Client, database: str, rows: Sequence[RejectedRow]) -> None:
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
    # retried insert whose first attempt landed would quarantine a row twice.
    client.command(
        f"INSERT INTO {table_ref(database, QUARANTINE_TABLE)} (table_name, row_key, _xid, reason, row_json) "
        "FORMAT JSONEachRow",
        data=payload,
        settings={"query_id": _write_id("quarantine")},
    )


@dataclass(frozen=True)
class BatchRecord:
    from_xid: int
    watermark: int
    rows: int
    events: int
    quarantined: int
    started_at_micros: int
    visible_at_micros: int
    loader: str


def record_batch(client: Client, database: str, batch: BatchRecord) -> None:
    """Commit a batch: one single-row insert, which either lands whole or not at all."""
    client.command(
        f"INSERT INTO {table_ref(database, BATCHES_TABLE)} "
        "(from_xid, watermark, rows, events, quarantined, started_at, visible_at, loader) VALUES "
        f"({batch.from_xid}, {batch.watermark}, {batch.rows}, {batch.events}, {batch.quarantined}, "
        f"fromUnixTimestamp64Micro({batch.started_at_micros}, 'UTC'), "
        f"fromUnixTimestamp64Micro({batch.visible_at_micros}, 'UTC'), {format_str(batch.loader)})",
        settings={"query_id": _write_id(f"batch-{batch.from_xid}-{batch.watermark}")},
    )


def _number(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def resume_point(client: Client, database: str) -> int:
    """The committed watermark: every row below it is loaded exactly once."""
    return _number(client, f"SELECT max(watermark) FROM {table_ref(database, BATCHES_TABLE)}")


def kill_statement(cluster: str = "") -> str:
    """Stops every statement of the loader still running. On a cluster, on every node: a
    shard's part of a distributed INSERT has its own query id and the loader's as its initial one."""
    query_id = "initial_query_id" if cluster else "query_id"
    return f"KILL QUERY{on_cluster(cluster)} WHERE startsWith({query_id}, {format_str(QUERY_ID_PREFIX)}) SYNC"


def delete_statement(database: str, table: str, resume: int, cluster: str = "") -> str:
    return f"DELETE FROM {delete_target(database, table, cluster)} WHERE _xid >= {int(resume)}"


def recover(client: Client, database: str, cluster: str = "") -> int:
    """Undo whatever a failed or interrupted batch left behind; return the resume point.

    Rows at or above the committed watermark can only come from a batch whose
    watermark row never landed, so they are deleted and the window is loaded again.
    A statement of a previous attempt still running on a server is stopped first, so
    it cannot land rows after the delete.
    """
    client.command(kill_statement(cluster))
    resume = resume_point(client, database)
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
    return resume


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
        f"SELECT max(watermark), count(), max(visible_at) FROM {table_ref(database, BATCHES_TABLE)}"
    ).result_rows[0]
    quarantined = _number(client, f"SELECT count() FROM {table_ref(database, QUARANTINE_TABLE)}")
    return {
        "raw_database": database,
        "rows": counts,
        "watermark": int(batches[0]),
        "batches": int(batches[1]),
        "last_batch_at": f"{batches[2]:%Y-%m-%d %H:%M:%S} UTC" if batches[1] else None,
        "quarantined": quarantined,
    }
