"""The loader's exactly-once protocol: new subscriber rows into ClickHouse's raw database.

A batch is a window [lo, hi) of subscriber transaction ids (`_xid`), with hi at or
below the subscriber's snapshot xmin, so the window's rows are final (loader/source.py).
ClickHouse pulls the window's rows of the three tables itself; the loader checks what
landed against the subscriber, quarantines the rows ClickHouse cannot hold, and only
then appends the batch's row to `_loader_batches`. max(watermark) there is the resume
point: at start-up, and after any failed or ambiguous batch, rows at or above it are
deleted (they can only come from a batch that never committed) and loading resumes
from it. One loader per raw database at a time, enforced by an advisory lock on the
subscriber held for the loader's lifetime.

This file is the protocol and nothing else: the loop that drives it, retries and the
entry points are loader/service.py, which failures are transient loader/retry.py, the
lag and stall bookkeeping loader/lag.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import psycopg2
from clickhouse_connect.driver.client import Client

from cinema import db
from cinema.retrying import poll
from cinema.settings import Settings
from cinema.warehouse import connect
from loader import raw, source
from loader.lag import Lag
from loader.metrics import Metrics
from loader.retry import SubscriberChanged
from loader.schema import RAW_TABLES, VIEWING_EVENTS, ensure_raw_schema
from loader.source import (
    REFERENCE_TABLES,
    EventLedger,
    EventWindow,
    FlushGate,
    IdFigures,
    ReferenceCount,
    RejectedRow,
    Snapshot,
)

log = logging.getLogger("loader")

# A snapshot's xmin is cuttable once the WAL is flushed past it, which under a steady stream
# takes the WAL writer milliseconds: waiting that long beats waiting for the next poll.
FLUSH_WAIT_SECONDS = 0.05
FLUSH_CHECK_SECONDS = 0.005
# Below this many events per stream, another connection to the subscriber costs more than it saves.
MIN_ROWS_PER_STREAM = 50_000


class LoaderError(RuntimeError):
    """The loader cannot go on; the message says why and what to do."""


class AnotherLoaderRunning(LoaderError):
    pass


class Fenced(LoaderError):
    pass


@dataclass(frozen=True)
class Batch:
    from_xid: int
    watermark: int
    rows: dict[str, int]
    quarantined: dict[str, int]
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


class Loader:
    """One process's hold on a raw database: the ClickHouse client, the subscriber session
    holding the advisory lock, and the watermark below which everything is loaded."""

    def __init__(self, settings: Settings, metrics: Metrics, *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        # Ends a wait for the embedded warehouse's lock (another process holds it).
        self._stop = stop
        self.database = settings.warehouse.raw_database
        self.cluster = settings.warehouse.cluster
        self.pull_source = raw.pull_source(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # One client per concurrent pull: a client runs one statement at a time.
        self._clients: list[Client] = []
        self._streams = ThreadPoolExecutor(settings.loader.pull_streams, thread_name_prefix="loader-pull")
        self._connection: db.Connection | None = None
        self._identity = ""
        self.locked = False
        self.watermark = 0
        self.position = raw.Position(0, 0, 0, source.Identity(0, 0, 0), "start")
        self.fence = raw.Fence(self.database, 0)
        self.ledger = EventLedger(0)
        self.gate = FlushGate()
        self._pending_since: float | None = None
        self._waiting_since: float | None = None
        self.lag = Lag(metrics, settings.loader.stall_seconds)

    @property
    def client(self) -> Client:
        return self._clients[0]

    @property
    def connection(self) -> db.Connection:
        assert self._connection is not None
        return self._connection

    @property
    def deduplicating(self) -> bool:
        return self.watermark < self.position.dedup_until

    def attach(self, *, resync: bool = False) -> bool:
        """Connect, take the lock, claim the next fencing epoch, recover and bind the
        watermark to the subscriber; False while another loader holds the lock."""
        warehouse = self.settings.warehouse
        while len(self._clients) < self.settings.loader.pull_streams:
            self._clients.append(
                connect(
                    self.settings,
                    user=warehouse.loader_user,
                    password=warehouse.loader_password,
                    client_settings=raw.CLUSTER_CLIENT_SETTINGS if warehouse.cluster else None,
                    stop=self._stop,
                )
            )
        if not self._identity:
            ensure_raw_schema(self.client, self.database, warehouse.cluster)
            self._identity = raw.lock_identity(self.client, self.database, warehouse.cluster)
        if self._connection is None or self._connection.closed:
            self._connection = db.loader(self.settings)
        if not source.try_lock(self.connection, self._identity):
            return False
        self.locked = True
        # The epoch first, then the kill: a write of an older loader either started
        # before the new epoch (and is killed now) or sees it and writes nothing.
        self.fence = raw.new_epoch(self.client, self.database, self.name)
        last = raw.recover(self.client, self.database, warehouse.cluster)
        self.position = self._bind(last, source.identity(self.connection), resync=resync)
        self.watermark = self.position.watermark
        self.ledger = EventLedger(self.watermark)
        self.gate.reset(self.watermark)
        self._pending_since = None
        log.info(
            "loading into %s from watermark %d%s",
            self.database,
            self.watermark,
            " (re-loading by event id)" if self.deduplicating else "",
            extra={"loader": self.name, "epoch": self.fence.epoch},
        )
        return True

    def _bind(self, last: raw.Position | None, current: source.Identity, *, resync: bool) -> raw.Position:
        """Where to load from, given the last record and the subscriber as it is now."""
        if resync:
            return self._resync(last, current, "a resync was requested (cinema load --resync)")
        if last is None:
            return raw.Position(0, 0, 0, current, "start")
        recorded = last.subscriber
        if recorded.system_identifier == 0:
            raise LoaderError(
                f"the raw database {self.database} was loaded by an older loader that did not record which "
                "subscriber its watermark belongs to, so a rebuilt or rewound subscriber cannot be told apart; "
                "run `cinema load --resync` once (it re-loads by event id, skipping what is loaded)"
            )
        if recorded.system_identifier != current.system_identifier:
            return self._resync(last, current, f"the subscriber is another cluster ({current.describe()})")
        if recorded.subscription_oid != current.subscription_oid:
            return self._resync(last, current, f"the subscription was recreated ({current.describe()})")
        if last.kind == "resync":
            # The resync was recorded but its deletion may not have run: no batch since, so again.
            raw.delete_reference_rows(self.client, self.database, self.cluster)
        if recorded.started_at_micros != current.started_at_micros:
            return self._rewind(last, current)
        self._require_horizon(last.watermark, "with no restart of the subscriber")
        return last

    def _require_horizon(self, watermark: int, context: str) -> None:
        xmax = source.snapshot(self.connection).xmax
        if xmax < watermark:
            raise LoaderError(
                f"the subscriber's next transaction id {xmax} is below the loader's watermark {watermark} {context} "
                "(restored from a backup, or a cluster this loader cannot identify): rows written now would be "
                "skipped. Run `cinema load --resync` to re-load the subscriber by event id"
            )

    def _rewind(self, last: raw.Position, current: source.Identity) -> raw.Position:
        """The subscriber restarted, maybe after a crash whose recovery hands out xids below
        the watermark again. Every loaded row's xid was flushed (FlushGate), so recovery's
        next xid is above all of them: from the highest loaded xid + 1 on, the subscriber
        can only hold rows written since. Re-load from there, by event id."""
        target = min(last.watermark, raw.highest_xid_since_resync(self.client, self.database) + 1)
        self._require_horizon(target, "after a restart")
        position = raw.Position(target, last.sequence + 1, max(last.dedup_until, last.watermark), current, "rewind")
        self._record(raw.BatchRecord(from_xid=last.watermark, position=position, loader=self.name))
        log.warning(
            "the subscriber restarted since the last batch: re-loading from transaction %d up to %d, skipping "
            "events already loaded",
            target,
            last.watermark,
            extra={"subscriber": current.describe()},
        )
        return position

    def _resync(self, last: raw.Position | None, current: source.Identity, reason: str) -> raw.Position:
        """Everything on the subscriber is loaded again, by event id, from its oldest xid on."""
        start = source.lowest_xid(self.connection)
        if start is None:
            start = source.snapshot(self.connection).xmin
        position = raw.Position(start, 0 if last is None else last.sequence + 1, raw.DEDUP_PENDING, current, "resync")
        self._record(
            raw.BatchRecord(from_xid=0 if last is None else last.watermark, position=position, loader=self.name)
        )
        raw.delete_reference_rows(self.client, self.database, self.cluster)
        log.warning("%s: re-loading the subscriber from transaction %d, skipping events already loaded", reason, start)
        return position

    def _record(self, record: raw.BatchRecord) -> None:
        raw.record_batch(self.client, self.fence, record)
        last = raw.position(self.client, self.database)
        if last is None or last.sequence != record.position.sequence:
            self._fenced()

    def _fenced(self) -> None:
        epoch = raw.current_epoch(self.client, self.database)
        if epoch != self.fence.epoch:
            raise Fenced(
                f"another loader attached to the raw database {self.database} (epoch {epoch}, this one "
                f"{self.fence.epoch}) and fenced this one off; nothing more was written"
            )

    def holder(self) -> str:
        return source.lock_holder(self.connection, self._identity)

    def short_of(self, target: int | None, seconds: float) -> str:
        """Why a drain ran out of time, in one line with the fix."""
        head = f"after {seconds:.0f}s the loader is at transaction {self.watermark}, short of {target}"
        try:
            blocker = source.oldest_open_transaction(self.connection) if self.locked else None
        except psycopg2.Error:
            blocker = None
        if blocker is not None and self.gate.xmin < (target or 0):
            return (
                f"{head}: the subscriber's xmin is held by {blocker.describe()}; end that transaction (as the "
                f"subscriber's admin: SELECT pg_terminate_backend({blocker.pid})) or raise --timeout"
            )
        return f"{head}: still loading; raise --timeout, or see `cinema stack status`"

    def detach(self) -> None:
        """Drop the subscriber session (and with it the lock); the next attach recovers."""
        self.locked = False
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def close(self) -> None:
        self.detach()
        self._streams.shutdown()
        while self._clients:
            self._clients.pop().close()

    def other_loader_done(self, target: int | None) -> bool:
        """The lock is taken: in follow mode that is an error; draining, has the other
        loader already loaded everything below `target`?"""
        if target is None:
            raise AnotherLoaderRunning(
                f"another loader is running on the raw database {self.database}: {self.holder()}. "
                "Stop it first; `cinema load --until-caught-up` waits for it instead."
            )
        recorded = raw.resume_point(self.client, self.database)
        if recorded >= target or (
            source.snapshot(self.connection).xmin >= target and not source.any_rows(self.connection, recorded, target)
        ):
            return True
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
            log.info("another loader is running (%s); waiting for it to catch up", self.holder())
        return False

    def step(self, *, batching: bool) -> Batch | None:
        """One poll: load the next window if it is due; None if nothing was loaded."""
        settings = self.settings.loader
        snapshot = source.snapshot(self.connection)
        if snapshot.started_at_micros != self.position.subscriber.started_at_micros or snapshot.xmax < self.watermark:
            raise SubscriberChanged(
                f"the subscriber restarted or its transaction horizon ({snapshot.xmax}) fell below the watermark "
                f"({self.watermark})"
            )
        xmin = self.gate.offer(snapshot)
        if xmin < snapshot.xmin:
            xmin = self._await_flush(snapshot)
        self._settle_reload(snapshot)
        self.ledger.extend(self.connection, xmin, settings.batch_max_rows)
        window = self.ledger.window(settings.batch_max_rows, self.position.dedup_until if self.deduplicating else None)
        lo = self.watermark
        references = source.reference_counts(self.connection, lo, window.hi) if window.hi > lo else {}
        reference_rows = sum(count.valid_keys + count.invalid_rows for count in references.values())
        whole_backlog = window.hi >= xmin
        if window.rows == 0 and reference_rows == 0:
            # Nothing committed in [lo, hi): move on without a batch, nothing to record.
            self.watermark = window.hi
            self.ledger.release(window.hi)
            self._note_lag(xmin, complete=whole_backlog, pending=self._known_pending(xmin))
            return None
        if batching and whole_backlog and self.ledger.rows + reference_rows < settings.batch_max_rows:
            now = time.monotonic()
            if self._pending_since is None:
                self._pending_since = now
            if now - self._pending_since < settings.batch_max_wait_seconds:
                self._note_lag(xmin, complete=False, pending=self.ledger.rows + reference_rows)
                return None
        batch = self._load(lo, window, references)
        self._pending_since = None
        self._note_lag(xmin, complete=whole_backlog, pending=self._known_pending(xmin))
        return batch

    def _await_flush(self, snapshot: Snapshot) -> int:
        """The cuttable xmin once the WAL is flushed past this snapshot, or after a short wait."""
        flushed = snapshot.flush_lsn

        def flushed_past() -> bool:
            nonlocal flushed
            flushed = source.flush_lsn(self.connection)
            return flushed >= snapshot.insert_lsn

        poll(flushed_past, timeout_seconds=FLUSH_WAIT_SECONDS, interval=FLUSH_CHECK_SECONDS)
        return self.gate.offer(replace(snapshot, flush_lsn=flushed))

    def _settle_reload(self, snapshot: Snapshot) -> None:
        """A resync re-loads until its end is known: once every initial copy has finished,
        past both the xids then handed out and every xid already loaded (above which
        recovery may delete again)."""
        if self.position.dedup_until != raw.DEDUP_PENDING or not source.subscription_ready(self.connection):
            return
        highest = raw.highest_loaded_xid(self.client, self.database)
        until = max(snapshot.xmax, 0 if highest is None else highest + 1)
        self.position = replace(self.position, dedup_until=until)
        log.info("the resync re-loads up to transaction %d, then loading goes on as usual", until)

    def _known_pending(self, xmin: int) -> int | None:
        """Committed events not yet loaded, if the ledger has seen all of them."""
        return self.ledger.rows if self.ledger.scanned_to >= xmin else None

    def _note_lag(self, xmin: int, *, complete: bool, pending: int | None) -> None:
        self.lag.note(
            self.connection,
            watermark=self.watermark,
            xmin=xmin,
            taken_at=self.gate.taken_at,
            complete=complete,
            pending=pending,
        )

    def _load(self, lo: int, window: EventWindow, references: dict[str, ReferenceCount]) -> Batch:
        started_at = time.time()
        began = time.monotonic()
        reload = self.deduplicating
        for table in REFERENCE_TABLES:
            if references[table.name].any:
                raw.pull(self.client, self.pull_source, self.fence, table, lo, window.hi)
        if window.rows:
            parts = min(len(self._clients), max(1, window.rows // MIN_ROWS_PER_STREAM))
            self._pull_events(
                self.ledger.split(lo, window.hi, parts), (window.min_id, window.max_id) if reload else None
            )
        visible_at = time.time()
        rows, rejected = self._check(lo, window, references, reload=reload)
        if reload:
            rejected = self._not_yet_quarantined(rejected)
        if rejected:
            raw.quarantine(self.client, self.fence, rejected)
            for row in rejected:
                log.error(
                    "quarantined a row ClickHouse cannot hold",
                    extra={"table": row.table, "key": row.key, "xid": row.xid, "reason": row.reason},
                )
        quarantined = {table.name: sum(row.table == table.name for row in rejected) for table in RAW_TABLES}
        position = replace(self.position, watermark=window.hi, sequence=self.position.sequence + 1, kind="batch")
        self._record(
            raw.BatchRecord(
                from_xid=lo,
                position=position,
                rows=sum(rows.values()),
                events=rows[VIEWING_EVENTS.name],
                quarantined=len(rejected),
                started_at_micros=int(started_at * 1_000_000),
                visible_at_micros=int(visible_at * 1_000_000),
                loader=self.name,
                max_xid=max(
                    [window.last_xid, *(count.max_xid for count in references.values()), *(row.xid for row in rejected)]
                ),
            )
        )
        self.position = position
        self.watermark = window.hi
        self.ledger.release(window.hi)
        batch = Batch(lo, window.hi, rows, quarantined, time.monotonic() - began)
        self.metrics.batch(batch.rows, batch.quarantined, batch.seconds)
        log.debug(
            "batch committed",
            extra={"from_xid": lo, "watermark": window.hi, "rows": batch.total_rows, "seconds": batch.seconds},
        )
        return batch

    def _not_yet_quarantined(self, rejected: list[RejectedRow]) -> list[RejectedRow]:
        """A re-load quarantines only the rows not quarantined before."""
        fresh: list[RejectedRow] = []
        for table in RAW_TABLES:
            rows = [row for row in rejected if row.table == table.name]
            known = raw.quarantined_keys(self.client, self.database, table.name, [row.key for row in rows])
            fresh.extend(row for row in rows if row.key not in known)
        return fresh

    def _pull_events(self, ranges: list[tuple[int, int]], new_ids_within: tuple[int, int] | None) -> None:
        """Pull consecutive ranges of one window at once, one client each; wait for all of
        them (none is left running) before reporting the first failure."""
        pulls = [
            self._streams.submit(raw.pull, client, self.pull_source, self.fence, VIEWING_EVENTS, lo, hi, new_ids_within)
            for client, (lo, hi) in zip(self._clients, ranges, strict=False)
        ]
        failures = [error for error in (pull.exception() for pull in pulls) if error is not None]
        if failures:
            raise failures[0]

    def _check(
        self, lo: int, window: EventWindow, references: dict[str, ReferenceCount], *, reload: bool
    ) -> tuple[dict[str, int], list[RejectedRow]]:
        """Compare what landed with the subscriber; return the rows loaded and those to quarantine.

        Events never change, so ClickHouse must hold exactly the window's events (count,
        distinct count, sum and sum of squares of the ids) but for the ones it cannot
        hold: by `_xid` normally, by event id during a re-load (the raw table may hold an
        event under an older `_xid`). A reference row can move to a newer `_xid` while the
        window is pulled, so its distinct keys must lie between the counts taken before
        and after the pull. The query after the pull also runs on the locking session: if
        that session was lost, the batch is not committed.
        """
        rows: dict[str, int] = {}
        rejected: list[RejectedRow] = []
        if reload:
            events = raw.event_figures_by_id(self.client, self.pull_source, self.database, window, lo)
        else:
            events = raw.event_figures(self.client, self.database, lo, window.hi)
        if events != window.figures:
            refused = source.rejected_rows(self.connection, VIEWING_EVENTS, lo, window.hi)
            if events + IdFigures.of(int(row.key) for row in refused) != window.figures:
                self._fenced()
                raise LoaderError(
                    f"batch [{lo}, {window.hi}) of viewing_events does not add up: the subscriber committed "
                    f"{window.figures.describe()}; ClickHouse holds {events.describe()}; {len(refused)} are "
                    "unloadable. The batch was not committed (its rows are deleted and loaded again at the next "
                    "start); nothing is lost, but the loader stops until this is understood."
                )
            rejected.extend(refused)
        rows[VIEWING_EVENTS.name] = events.rows
        if events.rows:
            self._check_timestamps(lo, window.hi)
        after = source.reference_counts(self.connection, lo, window.hi)
        for table in REFERENCE_TABLES:
            before = references.get(table.name)
            if before is None or not before.any:
                rows[table.name] = 0
                continue
            landed = raw.loaded(self.client, self.database, table, lo, window.hi)
            if not after[table.name].valid_keys <= landed.keys <= before.valid_keys:
                self._fenced()
                raise LoaderError(
                    f"batch [{lo}, {window.hi}) of {table.name}: ClickHouse holds {landed.keys} distinct "
                    f"{table.key}s, the subscriber had {before.valid_keys} before the pull and "
                    f"{after[table.name].valid_keys} after. The batch was not committed."
                )
            if after[table.name].invalid_rows:
                rejected.extend(source.rejected_rows(self.connection, table, lo, window.hi))
            rows[table.name] = landed.rows
        return rows, rejected

    def _check_timestamps(self, lo: int, hi: int) -> None:
        """ClickHouse's postgresql() reads timestamps as wall-clock text and drops the UTC
        offset: a subscriber session not in UTC would shift every timestamp silently."""
        landed = raw.received_at_sample(self.client, self.database, lo, hi)
        truth = source.received_at_micros(self.connection, landed)
        for event_id, micros in landed.items():
            if truth.get(event_id) != micros:
                raise LoaderError(
                    f"ClickHouse read received_at of event {event_id} as {micros} µs since the epoch, the subscriber "
                    f"holds {truth.get(event_id)}: the cinema_loader sessions ClickHouse opens on the subscriber do "
                    "not use UTC. Run `ALTER ROLE cinema_loader SET TimeZone = 'UTC'` on the subscriber, then "
                    "restart the loader (the batch was not committed)."
                )
