"""The subscriber side: transaction snapshots, the single-loader lock, and what a window holds.

Every subscriber row carries `_xid`, the subscriber transaction that wrote it. Rows
with `_xid` below the snapshot's xmin belong to finished transactions, and no row can
appear there any more: the transaction that could add one would have to be running,
and xmin is the oldest one that is. Windows [lo, hi) with hi <= xmin are therefore
final, whatever order the publisher's writers committed in.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from cinema import db
from loader.schema import MOVIES, TIMESTAMP_RANGE, USERS, VIEWING_EVENTS, RawTable

# How many subscriber transactions the event ledger scans per query, and holds at most:
# together they bound the loader's memory whatever the backlog.
SCAN_XID_SPAN = 100_000
MAX_LEDGER_TRANSACTIONS = 200_000


@dataclass(frozen=True)
class Snapshot:
    xmin: int
    xmax: int
    # Wall-clock time of the snapshot: rows committed before it with `_xid` < xmin
    # are loaded once the watermark reaches xmin.
    taken_at: float


def snapshot(connection: db.Connection) -> Snapshot:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
            "FROM pg_current_snapshot() AS s"
        )
        row = cursor.fetchone()
    assert row is not None
    return Snapshot(int(row[0]), int(row[1]), time.time())


def try_lock(connection: db.Connection, identity: str) -> bool:
    """Take the session-level advisory lock of one raw database; False if another session has it.

    The lock lives as long as this session: a killed loader's lock goes with its
    connection, and a loader that loses its connection must take the lock again.
    """
    return bool(db.scalar(connection, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (identity,)))


def valid(table: RawTable) -> str:
    """SQL true for the rows ClickHouse can hold: every timestamp inside DateTime64's range."""
    low, high = TIMESTAMP_RANGE
    conditions = [f"{column} >= '{low}+00' AND {column} < '{high}+00'" for column in table.timestamps]
    return "(" + " AND ".join(conditions) + ")" if conditions else "true"


def xid_window(lo: int, hi: int) -> str:
    """SQL (both dialects) for the rows of transactions lo <= _xid < hi."""
    return f"_xid >= {int(lo)} AND _xid < {int(hi)}"


@dataclass(frozen=True)
class Transaction:
    xid: int
    rows: int
    # Sum of the rows' ids: with the count, what ClickHouse must hold for this transaction.
    id_sum: int


@dataclass(frozen=True)
class EventWindow:
    hi: int
    rows: int
    id_sum: int


def cut_window(transactions: Iterable[Transaction], scanned_to: int, max_rows: int) -> EventWindow:
    """The longest run of whole transactions, oldest first, with at most `max_rows` rows (at
    least one transaction, however large). It ends where the next transaction begins, or
    at `scanned_to` when it takes them all: no transaction is ever split."""
    rows = id_sum = 0
    for taken, transaction in enumerate(transactions):
        if taken and rows + transaction.rows > max_rows:
            return EventWindow(transaction.xid, rows, id_sum)
        rows += transaction.rows
        id_sum += transaction.id_sum
    return EventWindow(scanned_to, rows, id_sum)


def split_window(transactions: Iterable[Transaction], lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into at most `parts` consecutive ranges of about equal rows, at
    transaction boundaries, for concurrent pulls."""
    inside = [transaction for transaction in transactions if lo <= transaction.xid < hi]
    total = sum(transaction.rows for transaction in inside)
    bounds = [lo]
    rows = 0
    for transaction in inside:
        if rows >= total * len(bounds) / parts and transaction.xid > bounds[-1]:
            bounds.append(transaction.xid)
        rows += transaction.rows
    return list(zip(bounds, [*bounds[1:], hi], strict=True))


class EventLedger:
    """Committed events not yet loaded, per subscriber transaction, oldest first.

    Each event row is scanned once, when its transaction falls below xmin; windows are
    then cut from the ledger without another scan of the subscriber, at transaction
    boundaries, and the per-transaction counts and id sums are what the batch check
    compares ClickHouse against. Events are append-only, so the entries never go stale.
    """

    def __init__(self, start: int) -> None:
        self.scanned_to = start
        self._transactions: deque[Transaction] = deque()
        self.rows = 0

    def extend(self, connection: db.Connection, xmin: int, wanted_rows: int) -> None:
        """Scan committed transactions below `xmin` until the ledger holds `wanted_rows` or is full."""
        while self.scanned_to < xmin and self.rows < wanted_rows and len(self._transactions) < MAX_LEDGER_TRANSACTIONS:
            upper = min(xmin, self.scanned_to + SCAN_XID_SPAN)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT _xid, count(*), sum(id) FROM viewing_events WHERE {xid_window(self.scanned_to, upper)} "
                    "GROUP BY _xid ORDER BY _xid"
                )
                for xid, rows, id_sum in cursor:
                    self._transactions.append(Transaction(int(xid), int(rows), int(id_sum)))
                    self.rows += int(rows)
            self.scanned_to = upper

    def window(self, max_rows: int) -> EventWindow:
        return cut_window(self._transactions, self.scanned_to, max_rows)

    def split(self, lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
        return split_window(self._transactions, lo, hi, parts)

    def release(self, hi: int) -> None:
        """Forget the transactions below `hi`: they are loaded."""
        while self._transactions and self._transactions[0].xid < hi:
            self.rows -= self._transactions.popleft().rows


@dataclass(frozen=True)
class ReferenceCount:
    # Distinct keys among the rows ClickHouse can hold, and how many rows it cannot.
    valid_keys: int
    invalid_rows: int

    @property
    def any(self) -> bool:
        return self.valid_keys > 0 or self.invalid_rows > 0


REFERENCE_TABLES = (USERS, MOVIES)


def reference_counts(connection: db.Connection, lo: int, hi: int) -> dict[str, ReferenceCount]:
    selects = [
        f"(SELECT count(DISTINCT {table.key}) FILTER (WHERE {valid(table)}) FROM {table.name} "
        f"WHERE {xid_window(lo, hi)}), "
        f"(SELECT count(*) FILTER (WHERE NOT {valid(table)}) FROM {table.name} WHERE {xid_window(lo, hi)})"
        for table in REFERENCE_TABLES
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(selects))
        row = cursor.fetchone()
    assert row is not None
    return {
        table.name: ReferenceCount(int(row[2 * index]), int(row[2 * index + 1]))
        for index, table in enumerate(REFERENCE_TABLES)
    }


def pending_rows(connection: db.Connection, lo: int, xmin: int) -> int:
    """Committed rows of all three tables not yet loaded (one count; for the lag metric)."""
    counts = " + ".join(
        f"(SELECT count(*) FROM {table.name} WHERE {xid_window(lo, xmin)})"
        for table in (VIEWING_EVENTS, *REFERENCE_TABLES)
    )
    return int(db.scalar(connection, f"SELECT {counts}"))


def any_rows(connection: db.Connection, lo: int, hi: int) -> bool:
    exists = " OR ".join(
        f"EXISTS (SELECT FROM {table.name} WHERE {xid_window(lo, hi)})" for table in (VIEWING_EVENTS, *REFERENCE_TABLES)
    )
    return bool(db.scalar(connection, f"SELECT {exists}"))


@dataclass(frozen=True)
class RejectedRow:
    table: str
    key: str
    xid: int
    reason: str
    row_json: str


def rejected_rows(connection: db.Connection, table: RawTable, lo: int, hi: int) -> list[RejectedRow]:
    """The window's rows ClickHouse cannot hold, each with the reason, as the subscriber has them."""
    low, high = TIMESTAMP_RANGE
    reasons = ", ".join(
        f"CASE WHEN NOT ({column} >= '{low}+00' AND {column} < '{high}+00') "
        f"THEN '{column} ' || {column}::text || ' is outside [{low}, {high}) UTC' END"
        for column in table.timestamps
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {table.key}::text, _xid, concat_ws('; ', {reasons}), row_to_json(t)::text "
            f"FROM {table.name} AS t WHERE {xid_window(lo, hi)} AND NOT {valid(table)} ORDER BY {table.key}"
        )
        return [RejectedRow(table.name, key, int(xid), reason, row_json) for key, xid, reason, row_json in cursor]


def received_at_micros(connection: db.Connection, event_ids: Iterable[int]) -> dict[int, int]:
    """Epoch microseconds of some events' received_at, exactly as the subscriber holds them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, (extract(epoch FROM received_at) * 1000000)::bigint FROM viewing_events WHERE id = ANY(%s)",
            (list(event_ids),),
        )
        return {int(key): int(micros) for key, micros in cursor}


def lock_holder(connection: db.Connection, identity: str) -> str:
    """Who holds the advisory lock of `identity`, as far as this role may see."""
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH k AS (SELECT hashtextextended(%s, 0) AS key) "
            "SELECT l.pid, a.application_name, host(a.client_addr), a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid, k "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = (k.key >> 32) & 4294967295 AND l.objid::bigint = k.key & 4294967295",
            (identity,),
        )
        row = cursor.fetchone()
    if row is None:
        return "a session that has just ended"
    pid, application, address, since = row
    return (
        f"subscriber backend {pid} ({application or 'an unnamed client'} from {address or 'a local socket'}, "
        f"connected {since:%Y-%m-%d %H:%M:%S %Z})"
    )
