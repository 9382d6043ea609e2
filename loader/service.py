"""The loader: new subscriber rows into ClickHouse's raw database, exactly once.

A batch is a window [lo, hi) of subscriber transaction ids (`_xid`), with hi at or
below the subscriber's snapshot xmin, so the window's rows are final (loader/source.py).
ClickHouse pulls the window's rows of the three tables itself; the loader checks what
landed against the subscriber, quarantines the rows ClickHouse cannot hold, and only
then appends the batch's row to `_loader_batches`. max(watermark) there is the resume
point: at start-up, and after any failed or ambiguous batch, rows at or above it are
deleted (they can only come from a batch that never committed) and loading resumes
from it. One loader per raw database at a time, enforced by an advisory lock on the
subscriber held for the loader's lifetime.

Plain functions: `follow` (the service) and `drain` (load what is committed, then
return), both driven by a `threading.Event` that stops them after the current batch.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import clickhouse_connect.driver.exceptions as clickhouse_errors
import psycopg2
from clickhouse_connect.driver.client import Client

from cinema import db
from cinema.replication import wait_for_subscriber
from cinema.settings import Settings
from cinema.warehouse import connect
from loader import raw, source
from loader.metrics import Metrics, scrape_watermark, serve
from loader.schema import RAW_TABLES, VIEWING_EVENTS, ensure_raw_schema
from loader.source import REFERENCE_TABLES, EventLedger, EventWindow, ReferenceCount, RejectedRow, Snapshot

log = logging.getLogger("loader")

# Transient failures are retried with exponential backoff up to this delay, for as long
# as they last within the budget; then the loader stops with the last error.
RETRY_FIRST_DELAY_SECONDS = 0.5
RETRY_MAX_DELAY_SECONDS = 30.0
RETRY_BUDGET_SECONDS = 300.0
# `--until-caught-up` waits this long for the subscriber to receive what the publisher
# committed, or for a loader service to load it.
CATCH_UP_TIMEOUT_SECONDS = 900.0
PROGRESS_LOG_SECONDS = 10.0
# While the backlog is larger than the ledger holds, the lag in rows is counted this often
# (a count costs about as much as scanning the backlog once).
LAG_COUNT_SECONDS = 30.0
# Below this many events per stream, another connection to the subscriber costs more than it saves.
MIN_ROWS_PER_STREAM = 50_000

# ClickHouse error codes worth retrying: the network, a restarting server or subscriber,
# momentary overload. Everything else (bad SQL, rights, data it rejects) is fatal.
TRANSIENT_CLICKHOUSE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        614,  # POSTGRESQL_CONNECTION_FAILURE
        1000,  # POCO_EXCEPTION
    }
)
PERMANENT_MARKERS = ("authentication failed", "does not exist", "permission denied", "not enough privileges")


class LoaderError(RuntimeError):
    """The loader cannot go on; the message says why and what to do."""


class AnotherLoaderRunning(LoaderError):
    pass


def is_transient(error: BaseException) -> bool:
    message = str(error).lower()
    if any(marker in message for marker in PERMANENT_MARKERS):
        return False
    if isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError):
        return True
    if isinstance(error, clickhouse_errors.Error):
        if error.code is None:
            # No server code: the HTTP transport failed (refused, reset, timed out).
            return isinstance(error, clickhouse_errors.OperationalError)
        # A subscriber restarting under a running pull surfaces as libpqxx's broken_connection.
        return error.code in TRANSIENT_CLICKHOUSE_CODES or (error.code == 1001 and "connection" in message)
    return False


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


@dataclass
class Summary:
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys((table.name for table in RAW_TABLES), 0))
    quarantined: int = 0
    batches: int = 0
    batch_seconds: float = 0.0
    seconds: float = 0.0
    watermark: int = 0
    caught_up: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def add(self, batch: Batch) -> None:
        for table, count in batch.rows.items():
            self.rows[table] += count
        self.quarantined += sum(batch.quarantined.values())
        self.batches += 1
        self.batch_seconds += batch.seconds

    def describe(self) -> str:
        rate = self.total_rows / self.batch_seconds if self.batch_seconds else 0.0
        tables = ", ".join(f"{table} {count}" for table, count in self.rows.items())
        return (
            f"loaded {self.total_rows} rows ({tables}) in {self.batches} batch(es), {self.seconds:.1f}s "
            f"({rate:,.0f} rows/s while loading); {self.quarantined} quarantined; watermark {self.watermark}"
        )


class Backoff:
    """Exponential delays with a cap, for as long as consecutive failures stay within the budget."""

    def __init__(self) -> None:
        self._failing_since: float | None = None
        self._attempts = 0

    def reset(self) -> None:
        self._failing_since = None
        self._attempts = 0

    def next_delay(self) -> float | None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since > RETRY_BUDGET_SECONDS:
            return None
        delay: float = min(RETRY_MAX_DELAY_SECONDS, RETRY_FIRST_DELAY_SECONDS * 2.0 ** min(self._attempts, 32))
        self._attempts += 1
        return delay


class Loader:
    """One process's hold on a raw database: the ClickHouse client, the subscriber session
    holding the advisory lock, and the watermark below which everything is loaded."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.database = settings.warehouse.raw_database
        self.pull_source = raw.pull_source(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # One client per concurrent pull: a client runs one statement at a time.
        self._clients: list[Client] = []
        self._streams = ThreadPoolExecutor(settings.loader.pull_streams, thread_name_prefix="loader-pull")
        self._connection: db.Connection | None = None
        self._identity = ""
        self.locked = False
        self.watermark = 0
        self.ledger = EventLedger(0)
        self._pending_since: float | None = None
        self._complete_as_of: float | None = None
        self._lag_rows = 0
        self._lag_counted_at = 0.0
        self._waiting_since: float | None = None

    @property
    def client(self) -> Client:
        return self._clients[0]

    @property
    def connection(self) -> db.Connection:
        assert self._connection is not None
        return self._connection

    def attach(self) -> bool:
        """Connect, take the lock and recover; False while another loader holds the lock."""
        warehouse = self.settings.warehouse
        while len(self._clients) < self.settings.loader.pull_streams:
            self._clients.append(
                connect(
                    self.settings,
                    user=warehouse.loader_user,
                    password=warehouse.loader_password,
                    client_settings=raw.CLUSTER_CLIENT_SETTINGS if warehouse.cluster else None,
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
        self.watermark = raw.recover(self.client, self.database, warehouse.cluster)
        self.ledger = EventLedger(self.watermark)
        self._pending_since = None
        log.info("loading into %s from watermark %d", self.database, self.watermark, extra={"loader": self.name})
        return True

    def holder(self) -> str:
        return source.lock_holder(self.connection, self._identity)

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
        elif time.monotonic() - self._waiting_since > CATCH_UP_TIMEOUT_SECONDS:
            raise LoaderError(
                f"after {CATCH_UP_TIMEOUT_SECONDS:.0f}s the other loader ({self.holder()}) has still not loaded "
                f"up to transaction {target}"
            )
        return False

    def step(self, *, batching: bool) -> Batch | None:
        """One poll: load the next window if it is due; None if nothing was loaded."""
        settings = self.settings.loader
        snapshot = source.snapshot(self.connection)
        self.ledger.extend(self.connection, snapshot.xmin, settings.batch_max_rows)
        window = self.ledger.window(settings.batch_max_rows)
        lo = self.watermark
        references = source.reference_counts(self.connection, lo, window.hi) if window.hi > lo else {}
        reference_rows = sum(count.valid_keys + count.invalid_rows for count in references.values())
        whole_backlog = window.hi >= snapshot.xmin
        if window.rows == 0 and reference_rows == 0:
            # Nothing committed in [lo, hi): move on without a batch, nothing to record.
            self.watermark = window.hi
            self.ledger.release(window.hi)
            self._note_lag(snapshot, complete=whole_backlog, pending=self._known_pending(snapshot))
            return None
        if batching and whole_backlog and self.ledger.rows + reference_rows < settings.batch_max_rows:
            now = time.monotonic()
            if self._pending_since is None:
                self._pending_since = now
            if now - self._pending_since < settings.batch_max_wait_seconds:
                self._note_lag(snapshot, complete=False, pending=self.ledger.rows + reference_rows)
                return None
        batch = self._load(lo, window, references)
        self._pending_since = None
        self._note_lag(snapshot, complete=whole_backlog, pending=self._known_pending(snapshot))
        return batch

    def _known_pending(self, snapshot: Snapshot) -> int | None:
        """Committed events not yet loaded, if the ledger has seen all of them."""
        return self.ledger.rows if self.ledger.scanned_to >= snapshot.xmin else None

    def _note_lag(self, snapshot: Snapshot, *, complete: bool, pending: int | None) -> None:
        """Record the lag; `pending` None: unknown without a count (the backlog exceeds the ledger)."""
        if complete:
            self._complete_as_of = snapshot.taken_at
        if pending is not None:
            self._lag_rows = pending
        elif time.monotonic() - self._lag_counted_at > LAG_COUNT_SECONDS:
            self._lag_rows = source.pending_rows(self.connection, self.watermark, snapshot.xmin)
            self._lag_counted_at = time.monotonic()
        self.metrics.progress(self.watermark, self._lag_rows, self._complete_as_of)

    def lag_seconds(self) -> float | None:
        if self._complete_as_of is None:
            return None
        return max(0.0, time.time() - self._complete_as_of)

    def lag_rows(self) -> int:
        return self._lag_rows

    def _load(self, lo: int, window: EventWindow, references: dict[str, ReferenceCount]) -> Batch:
        started_at = time.time()
        began = time.monotonic()
        for table in REFERENCE_TABLES:
            if references[table.name].any:
                raw.pull(self.client, self.pull_source, self.database, table, lo, window.hi)
        if window.rows:
            parts = min(len(self._clients), max(1, window.rows // MIN_ROWS_PER_STREAM))
            self._pull_events(self.ledger.split(lo, window.hi, parts))
        visible_at = time.time()
        rows, rejected = self._check(lo, window, references)
        if rejected:
            raw.quarantine(self.client, self.database, rejected)
            for row in rejected:
                log.error(
                    "quarantined a row ClickHouse cannot hold",
                    extra={"table": row.table, "key": row.key, "xid": row.xid, "reason": row.reason},
                )
        quarantined = {table.name: sum(row.table == table.name for row in rejected) for table in RAW_TABLES}
        raw.record_batch(
            self.client,
            self.database,
            raw.BatchRecord(
                from_xid=lo,
                watermark=window.hi,
                rows=sum(rows.values()),
                events=rows[VIEWING_EVENTS.name],
                quarantined=len(rejected),
                started_at_micros=int(started_at * 1_000_000),
                visible_at_micros=int(visible_at * 1_000_000),
                loader=self.name,
            ),
        )
        self.watermark = window.hi
        self.ledger.release(window.hi)
        batch = Batch(lo, window.hi, rows, quarantined, time.monotonic() - began)
        self.metrics.batch(batch.rows, batch.quarantined, batch.seconds)
        log.debug(
            "batch committed",
            extra={"from_xid": lo, "watermark": window.hi, "rows": batch.total_rows, "seconds": batch.seconds},
        )
        return batch

    def _pull_events(self, ranges: list[tuple[int, int]]) -> None:
        """Pull consecutive ranges of one window at once, one client each; wait for all of
        them (none is left running) before reporting the first failure."""
        pulls = [
            self._streams.submit(raw.pull, client, self.pull_source, self.database, VIEWING_EVENTS, lo, hi)
            for client, (lo, hi) in zip(self._clients, ranges, strict=False)
        ]
        failures = [error for error in (pull.exception() for pull in pulls) if error is not None]
        if failures:
            raise failures[0]

    def _check(
        self, lo: int, window: EventWindow, references: dict[str, ReferenceCount]
    ) -> tuple[dict[str, int], list[RejectedRow]]:
        """Compare what landed with the subscriber; return the rows loaded and those to quarantine.

        Events never change, so ClickHouse must hold exactly the window's rows (count and
        id sum) but for the ones it cannot hold. A reference row can move to a newer
        `_xid` while the window is pulled, so its distinct keys must lie between the
        counts taken before and after the pull. The query after the pull also runs on
        the locking session: if that session was lost, the batch is not committed.
        """
        rows: dict[str, int] = {}
        rejected: list[RejectedRow] = []
        events = raw.loaded(self.client, self.database, VIEWING_EVENTS, lo, window.hi)
        if (events.rows, events.key_sum) != (window.rows, window.id_sum):
            refused = source.rejected_rows(self.connection, VIEWING_EVENTS, lo, window.hi)
            refused_sum = sum(int(row.key) for row in refused)
            if (events.rows + len(refused), events.key_sum + refused_sum) != (window.rows, window.id_sum):
                raise LoaderError(
                    f"batch [{lo}, {window.hi}) of viewing_events does not add up: the subscriber committed "
                    f"{window.rows} rows (id sum {window.id_sum}), ClickHouse holds {events.rows} "
                    f"(id sum {events.key_sum}) and {len(refused)} are unloadable. The batch was not committed "
                    "(its rows are deleted and loaded again at the next start); nothing is lost, but the loader "
                    "stops until this is understood."
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


class _ProgressLog:
    """One INFO line per interval with what was loaded, instead of one per batch."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._since = time.monotonic()
        self._rows = 0
        self._batches = 0

    def add(self, batch: Batch) -> None:
        self._rows += batch.total_rows
        self._batches += 1

    def maybe_log(self, loader: Loader, *, force: bool = False) -> None:
        elapsed = time.monotonic() - self._since
        if not self._batches or (elapsed < PROGRESS_LOG_SECONDS and not force):
            return
        lag = loader.lag_seconds()
        log.info(
            "loaded %d rows in %d batch(es)",
            self._rows,
            self._batches,
            extra={
                "rows_per_s": round(self._rows / elapsed) if elapsed else 0,
                "watermark": loader.watermark,
                "lag_rows": loader.lag_rows(),
                "lag_seconds": None if lag is None else round(lag, 3),
            },
        )
        self._reset()


class _Retry:
    """Decides what a failure means: transient ones get a backoff delay, the rest stop the loader."""

    def __init__(self, loader: Loader, metrics: Metrics) -> None:
        self._loader = loader
        self._metrics = metrics
        self._backoff = Backoff()

    def succeeded(self) -> None:
        self._backoff.reset()

    def delay_after(self, error: Exception) -> float:
        if isinstance(error, LoaderError):
            self._metrics.error("fatal")
            raise error
        message = self._loader.pull_source.scrub(str(error).strip())
        if not is_transient(error):
            self._metrics.error("fatal")
            raise LoaderError(message) from None
        self._metrics.error("transient")
        self._metrics.state("retrying")
        # The batch in flight may have landed in part: the next attach recovers.
        self._loader.detach()
        delay = self._backoff.next_delay()
        if delay is None:
            raise LoaderError(f"still failing after {RETRY_BUDGET_SECONDS:.0f}s of retries: {message}") from None
        log.warning("transient error, retrying in %.1fs: %s", delay, message)
        return delay


def run(settings: Settings, stop: threading.Event, *, target: int | None, metrics: Metrics) -> Summary:
    """Load until the watermark reaches `target` (None: until `stop` is set)."""
    # chdb runs ClickHouse, and the libpq its postgresql() pulls use, inside this process:
    # their sessions then read timestamps in UTC whatever the subscriber's default.
    previous_timezone = os.environ.get("PGTZ")
    os.environ["PGTZ"] = "UTC"
    summary = Summary()
    began = time.monotonic()
    loader = Loader(settings, metrics)
    retry = _Retry(loader, metrics)
    progress = _ProgressLog()
    try:
        while not stop.is_set():
            try:
                if not loader.locked and not loader.attach():
                    if loader.other_loader_done(target):
                        summary.caught_up = True
                        break
                    stop.wait(settings.loader.poll_interval_seconds)
                    continue
                if target is not None and loader.watermark >= target:
                    summary.caught_up = True
                    break
                batch = loader.step(batching=target is None)
                retry.succeeded()
            except Exception as error:  # classified by _Retry: transient errors wait, the rest raise
                stop.wait(retry.delay_after(error))
                continue
            if batch is not None:
                summary.add(batch)
                progress.add(batch)
            progress.maybe_log(loader)
            if batch is None:
                stop.wait(settings.loader.poll_interval_seconds)
        progress.maybe_log(loader, force=True)
    finally:
        loader.close()
        if previous_timezone is None:
            del os.environ["PGTZ"]
        else:
            os.environ["PGTZ"] = previous_timezone
    summary.watermark = loader.watermark
    summary.seconds = time.monotonic() - began
    return summary


def follow(settings: Settings, stop: threading.Event) -> Summary:
    """The service: load as rows commit until `stop` is set, serving /metrics and /healthz."""
    metrics = Metrics()
    server = serve(metrics, settings.loader.metrics_host, settings.loader.metrics_port)
    try:
        return run(settings, stop, target=None, metrics=metrics)
    finally:
        server.shutdown()
        server.server_close()


def drain(settings: Settings, *, stop: threading.Event | None = None, wait_for_publisher: bool = True) -> Summary:
    """Load everything committed so far, then return (`summary.caught_up` False if stopped first).

    With `wait_for_publisher`, "so far" means on the publisher: the subscriber is first
    given time to receive it. Where a loader service runs (LOADER_RUNS_AS_SERVICE), this
    waits for the service instead of loading.
    """
    stop = stop or threading.Event()
    if wait_for_publisher:
        wait_for_subscriber(settings, timeout_seconds=CATCH_UP_TIMEOUT_SECONDS)
    with db.closing(db.loader(settings)) as connection:
        # Every transaction committed by now has an id below xmax; the watermark passes
        # xmax once all of them (and any still running then) are loaded.
        target = source.snapshot(connection).xmax
    if settings.loader.runs_as_service:
        return _wait_for_service(settings, target, stop)
    return run(settings, stop, target=target, metrics=Metrics())


def _wait_for_service(settings: Settings, target: int, stop: threading.Event) -> Summary:
    began = time.monotonic()
    while not stop.is_set():
        watermark = scrape_watermark(settings)
        if watermark is not None and watermark >= target:
            return Summary(watermark=watermark, caught_up=True, seconds=time.monotonic() - began)
        if time.monotonic() - began > CATCH_UP_TIMEOUT_SECONDS:
            raise LoaderError(
                f"after {CATCH_UP_TIMEOUT_SECONDS:.0f}s the loader service "
                f"({settings.loader.metrics_host}:{settings.loader.metrics_port}) reports watermark {watermark}, "
                f"short of {target}; check its logs and /healthz"
            )
        stop.wait(settings.loader.poll_interval_seconds)
    return Summary(seconds=time.monotonic() - began)
