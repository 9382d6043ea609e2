"""The subscriber side: transaction snapshots, the single-loader lock, and what a window holds.

Every subscriber row carries `_xid`, the subscriber transaction that wrote it. Rows
with `_xid` below the snapshot's xmin belong to finished transactions, and no row can
appear there any more: the transaction that could add one would have to be running,
and xmin is the oldest one that is. Windows [lo, hi) with hi <= xmin are therefore
final, whatever order the publisher's writers committed in.

Visible is not durable: the subscription's apply workers commit with
`synchronous_commit = off`, so a crash of the subscriber can undo a transaction that was
already visible. A window is therefore cut only below an xmin whose WAL is flushed
(`FlushGate`): a transaction leaves the proc array only after its commit record is
inserted, so once the WAL is flushed past the insert position read with the snapshot,
every transaction below that snapshot's xmin survives any crash.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cinema import db
from cinema.names import SUBSCRIPTION
from loader.schema import MOVIES, TIMESTAMP_RANGE, USERS, VIEWING_EVENTS, RawTable

# How many subscriber transactions the event ledger scans per query, and holds at most:
# together they bound the loader's memory whatever the backlog.
SCAN_XID_SPAN = 100_000
MAX_LEDGER_TRANSACTIONS = 200_000


STARTED_AT_MICROS = "(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint"


@dataclass(frozen=True)
class Snapshot:
    xmin: int
    xmax: int
    # Wall-clock time of the snapshot: rows committed before it with `_xid` < xmin
    # are loaded once the watermark reaches xmin.
    taken_at: float
    # WAL insert position read after the snapshot, and the flushed position: the
    # snapshot's xmin is durable once the flushed position reaches `insert_lsn`.
    insert_lsn: int = 0
    flush_lsn: int = 0
    # The postmaster's start: a change means a restart, maybe a crash (Identity).
    started_at_micros: int = 0


def snapshot(connection: db.Connection) -> Snapshot:
    # The FROM function runs before the target list: the insert position is read after
    # the snapshot, so it is past the commit record of every transaction below its xmin.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint, "
            "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint, "
            "pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint, "
            f"{STARTED_AT_MICROS} FROM pg_current_snapshot() AS s"
        )
        row = cursor.fetchone()
    assert row is not None
    return Snapshot(int(row[0]), int(row[1]), time.time(), int(row[2]), int(row[3]), int(row[4]))


def flush_lsn(connection: db.Connection) -> int:
    return int(db.scalar(connection, "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint"))


class FlushGate:
    """The highest xmin whose transactions below it are all flushed to the subscriber's WAL.

    Each snapshot offers its xmin with the insert position read after it; an offer
    becomes cuttable once a later (or the same) snapshot sees the flush position past
    that insert position. Offers wait in order: both positions and xmin only grow.
    """

    def __init__(self) -> None:
        self._offers: deque[tuple[int, int, float]] = deque()
        self.xmin = 0
        # When the current cuttable xmin's snapshot was taken (freshness counts from there).
        self.taken_at: float | None = None

    def reset(self, xmin: int) -> None:
        self._offers.clear()
        self.xmin = xmin
        self.taken_at = None

    def offer(self, current: Snapshot) -> int:
        """Take a snapshot into account; return the cuttable xmin."""
        if not self._offers or current.xmin > self._offers[-1][0]:
            self._offers.append((current.xmin, current.insert_lsn, current.taken_at))
        while self._offers and self._offers[0][1] <= current.flush_lsn:
            xmin, _, taken_at = self._offers.popleft()
            if xmin >= self.xmin:
                self.xmin, self.taken_at = xmin, taken_at
        return self.xmin


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
class IdFigures:
    """What a set of event ids must add up to, exactly and on both sides alike: the count,
    the distinct count (equal: no id twice), the sum and the sum of squares, all without
    wrapping (numeric in PostgreSQL, Int128/Int256 in ClickHouse). One duplicated id plus
    one missing id can balance the count and, by chance, the sum, never both sums."""

    rows: int = 0
    distinct: int = 0
    id_sum: int = 0
    id_square_sum: int = 0

    def __add__(self, other: IdFigures) -> IdFigures:
        return IdFigures(
            self.rows + other.rows,
            self.distinct + other.distinct,
            self.id_sum + other.id_sum,
            self.id_square_sum + other.id_square_sum,
        )

    @classmethod
    def of(cls, ids: Iterable[int]) -> IdFigures:
        listed = list(ids)
        return cls(len(listed), len(set(listed)), sum(listed), sum(value * value for value in listed))

    def describe(self) -> str:
        return (
            f"{self.rows} rows, {self.distinct} distinct ids, id sum {self.id_sum}, sum of squares {self.id_square_sum}"
        )


# The figures in each dialect (PostgreSQL's ids are a primary key: distinct by construction).
POSTGRES_FIGURES = "count(*), count(*), sum(id::numeric), sum(id::numeric * id::numeric)"
CLICKHOUSE_FIGURES = "count(), uniqExact(id), sum(toInt128(id)), sum(toInt256(id) * toInt256(id))"


def figures_of(row: Sequence[object]) -> IdFigures:
    return IdFigures(*(int(str(value)) if value is not None else 0 for value in row[:4]))


@dataclass(frozen=True)
class Transaction:
    xid: int
    # What ClickHouse must hold for this transaction, and its id range (a re-load's
    # duplicate filter reads only the raw parts that overlap it).
    figures: IdFigures
    min_id: int
    max_id: int

    @property
    def rows(self) -> int:
        return self.figures.rows


@dataclass(frozen=True)
class EventWindow:
    hi: int
    figures: IdFigures = IdFigures()
    min_id: int = 0
    max_id: int = -1
    # The last transaction with events in the window (0: none).
    last_xid: int = 0

    @property
    def rows(self) -> int:
        return self.figures.rows


def cut_window(
    transactions: Iterable[Transaction], scanned_to: int, max_rows: int, cap: int | None = None
) -> EventWindow:
    """The longest run of whole transactions, oldest first, with at most `max_rows` rows (at
    least one transaction, however large). It ends where the next transaction begins, or
    at `scanned_to` when it takes them all: no transaction is ever split. It never
    reaches past `cap` (the end of a re-load)."""
    end = scanned_to if cap is None else min(scanned_to, cap)
    figures = IdFigures()
    low, high, last_xid = 0, -1, 0
    for taken, transaction in enumerate(transactions):
        if transaction.xid >= end:
            break
        if taken and figures.rows + transaction.rows > max_rows:
            return EventWindow(transaction.xid, figures, low, high, last_xid)
        low = transaction.min_id if not taken else min(low, transaction.min_id)
        high = transaction.max_id if not taken else max(high, transaction.max_id)
        figures += transaction.figures
        last_xid = transaction.xid
    return EventWindow(end, figures, low, high, last_xid)


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
                    f"SELECT _xid, {POSTGRES_FIGURES}, min(id), max(id) FROM viewing_events "
                    f"WHERE {xid_window(self.scanned_to, upper)} GROUP BY _xid ORDER BY _xid"
                )
                for row in cursor:
                    transaction = Transaction(int(row[0]), figures_of(row[1:5]), int(row[5]), int(row[6]))
                    self._transactions.append(transaction)
                    self.rows += transaction.rows
            self.scanned_to = upper

    def window(self, max_rows: int, cap: int | None = None) -> EventWindow:
        return cut_window(self._transactions, self.scanned_to, max_rows, cap)

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
    # The window's highest `_xid` in this table (0: none).
    max_xid: int = 0

    @property
    def any(self) -> bool:
        return self.valid_keys > 0 or self.invalid_rows > 0


REFERENCE_TABLES = (USERS, MOVIES)


def reference_counts(connection: db.Connection, lo: int, hi: int) -> dict[str, ReferenceCount]:
    selects = [
        f"(SELECT count(DISTINCT {table.key}) FILTER (WHERE {valid(table)}) FROM {table.name} "
        f"WHERE {xid_window(lo, hi)}), "
        f"(SELECT count(*) FILTER (WHERE NOT {valid(table)}) FROM {table.name} WHERE {xid_window(lo, hi)}), "
        f"(SELECT coalesce(max(_xid), 0) FROM {table.name} WHERE {xid_window(lo, hi)})"
        for table in REFERENCE_TABLES
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(selects))
        row = cursor.fetchone()
    assert row is not None
    return {
        table.name: ReferenceCount(int(row[3 * index]), int(row[3 * index + 1]), int(row[3 * index + 2]))
        for index, table in enumerate(REFERENCE_TABLES)
    }


def pending_rows(connection: db.Connection, lo: int, hi: int | None = None) -> int:
    """Committed rows of all three tables in [lo, hi) (hi None: from lo on, including rows
    of transactions not yet loadable); one count, for the lag metric."""
    where = xid_window(lo, hi) if hi is not None else f"_xid >= {int(lo)}"
    counts = " + ".join(
        f"(SELECT count(*) FROM {table.name} WHERE {where})" for table in (VIEWING_EVENTS, *REFERENCE_TABLES)
    )
    return int(db.scalar(connection, f"SELECT {counts}"))


def lowest_xid(connection: db.Connection) -> int | None:
    """The oldest `_xid` of any subscriber row: where a resync starts."""
    lows = ", ".join(f"(SELECT min(_xid) FROM {table.name})" for table in (VIEWING_EVENTS, *REFERENCE_TABLES))
    value = db.scalar(connection, f"SELECT least({lows})")
    return None if value is None else int(value)


@dataclass(frozen=True)
class Identity:
    """Which subscriber the xids belong to. The cluster (`system_identifier`) and the
    subscription (its oid) name the xid space; the postmaster start names one run of it:
    a new start may follow a crash whose recovery handed out xids again."""

    system_identifier: int
    subscription_oid: int
    started_at_micros: int

    def describe(self) -> str:
        return (
            f"cluster {self.system_identifier}, subscription oid {self.subscription_oid}, "
            f"started at {self.started_at_micros} µs"
        )


def identity(connection: db.Connection) -> Identity:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT system_identifier FROM pg_control_system()), "
            f"coalesce((SELECT oid::bigint FROM pg_subscription WHERE subname = %s), 0), {STARTED_AT_MICROS}",
            (SUBSCRIPTION,),
        )
        row = cursor.fetchone()
    assert row is not None
    return Identity(int(row[0]), int(row[1]), int(row[2]))


def subscription_ready(connection: db.Connection) -> bool:
    """Every table of the subscription has finished its initial copy ('r'eady)."""
    return bool(
        db.scalar(
            connection,
            "SELECT count(*) > 0 AND bool_and(r.srsubstate = 'r') FROM pg_subscription_rel r "
            "JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s",
            (SUBSCRIPTION,),
        )
    )


@dataclass(frozen=True)
class Blocker:
    """The session whose open transaction holds the subscriber's xmin back."""

    pid: int
    application: str
    state: str
    seconds: float

    def describe(self) -> str:
        return (
            f"subscriber backend {self.pid} ({self.application}, {self.state}, "
            f"transaction open for {self.seconds:.0f}s)"
        )


def oldest_open_transaction(connection: db.Connection) -> Blocker | None:
    """The session with the oldest transaction id still running: the one xmin waits for.
    Other roles' sessions show their state only to members of pg_read_all_stats."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, coalesce(nullif(application_name, ''), backend_type, 'an unnamed client'), "
            "coalesce(state, 'state hidden'), coalesce(extract(epoch FROM now() - xact_start), 0)::float8 "
            "FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY age(backend_xid) DESC LIMIT 1"
        )
        row = cursor.fetchone()
    return None if row is None else Blocker(int(row[0]), str(row[1]), str(row[2]), float(row[3]))


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
