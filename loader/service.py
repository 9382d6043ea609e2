"""The loader as a service and as a one-shot drain, around the protocol of loader/protocol.py.

`run` is the loop: attach (waiting while another loader holds the lock), step, and on a
failure let `_Retry` decide (transient: detach, back off, attach again, which recovers;
anything else stops the loader). `follow` (the service) and `drain` (load what is
committed, then return) drive it, both stopped by a `threading.Event` after the current
batch; every wait on the way wakes on that event. `resync` only re-baselines.

The protocol's errors and batch are importable from here too: this is the module that
`cinema load`, `cinema live` and the tests call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from cinema import db
from cinema.replication import wait_for_subscriber
from cinema.retrying import Stopped, poll
from cinema.settings import Settings
from loader import source
from loader.metrics import Metrics, scrape_watermark, serve
from loader.protocol import AnotherLoaderRunning, Batch, Fenced, Loader, LoaderError
from loader.retry import RETRY_BUDGET_SECONDS, backoff, is_transient
from loader.schema import RAW_TABLES

__all__ = [
    "AnotherLoaderRunning",
    "Batch",
    "Fenced",
    "Loader",
    "LoaderError",
    "Summary",
    "drain",
    "follow",
    "resync",
    "run",
]

log = logging.getLogger("loader")

# `--until-caught-up` gives up after this long (its --timeout): receiving what the
# publisher committed, waiting for another loader or the service, and loading, together.
CATCH_UP_TIMEOUT_SECONDS = 600.0
PROGRESS_LOG_SECONDS = 10.0


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
        lag = loader.lag.seconds()
        log.info(
            "loaded %d rows in %d batch(es)",
            self._rows,
            self._batches,
            extra={
                "rows_per_s": round(self._rows / elapsed) if elapsed else 0,
                "watermark": loader.watermark,
                "lag_rows": loader.lag.rows(),
                "lag_seconds": None if lag is None else round(lag, 3),
            },
        )
        self._reset()


class _Retry:
    """Decides what a failure means: transient ones get a backoff delay, the rest stop the loader."""

    def __init__(self, loader: Loader, metrics: Metrics) -> None:
        self._loader = loader
        self._metrics = metrics
        self._backoff = backoff()

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


def run(
    settings: Settings,
    stop: threading.Event,
    *,
    target: int | None,
    metrics: Metrics,
    deadline: float | None = None,
    resync: bool = False,
) -> Summary:
    """Load until the watermark reaches `target` (None: until `stop` is set), or until the
    monotonic `deadline` passes (a LoaderError naming what holds loading back)."""
    # chdb runs ClickHouse, and the libpq its postgresql() pulls use, inside this process:
    # their sessions then read timestamps in UTC whatever the subscriber's default.
    previous_timezone = os.environ.get("PGTZ")
    os.environ["PGTZ"] = "UTC"
    summary = Summary()
    began = time.monotonic()
    loader = Loader(settings, metrics, stop=stop)
    retry = _Retry(loader, metrics)
    progress = _ProgressLog()
    try:
        while not stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                raise LoaderError(loader.short_of(target, time.monotonic() - began))
            try:
                if not loader.locked and not loader.attach(resync=resync):
                    if loader.other_loader_done(target):
                        summary.caught_up = True
                        break
                    stop.wait(settings.loader.poll_interval_seconds)
                    continue
                resync = False
                if target is not None and loader.watermark >= target:
                    summary.caught_up = True
                    break
                batch = loader.step(batching=target is None)
                retry.succeeded()
            except Stopped:
                break  # a wait for the warehouse, cut short: nothing was in flight
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
    metrics = Metrics(settings.loader.stall_seconds)
    server = serve(metrics, settings.loader.metrics_host, settings.loader.metrics_port)
    try:
        return run(settings, stop, target=None, metrics=metrics)
    finally:
        server.shutdown()
        server.server_close()


def drain(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    wait_for_publisher: bool = True,
    timeout_seconds: float = CATCH_UP_TIMEOUT_SECONDS,
) -> Summary:
    """Load everything committed so far, then return (`summary.caught_up` False if stopped first).

    With `wait_for_publisher`, "so far" means on the publisher: the subscriber is first
    given time to receive it. Where a loader service runs (LOADER_RUNS_AS_SERVICE), this
    waits for the service instead of loading. After `timeout_seconds` in all, it stops
    with a LoaderError that names what holds loading back.
    """
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout_seconds
    if wait_for_publisher:
        wait_for_subscriber(settings, timeout_seconds=timeout_seconds, stop=stop)
    with db.closing(db.loader(settings)) as connection:
        # Every transaction committed by now has an id below xmax; the watermark passes
        # xmax once all of them (and any still running then) are loaded.
        target = source.snapshot(connection).xmax
    if settings.loader.runs_as_service:
        return _wait_for_service(settings, target, stop, deadline)
    return run(settings, stop, target=target, metrics=Metrics(settings.loader.stall_seconds), deadline=deadline)


def resync(settings: Settings) -> Summary:
    """Re-baseline the raw database on the subscriber as it is now (`cinema load --resync`):
    record a resync, so that the next load re-loads the subscriber by event id, skipping
    what is loaded. Loads nothing itself."""
    loader = Loader(settings, Metrics(settings.loader.stall_seconds))
    try:
        if not loader.attach(resync=True):
            raise AnotherLoaderRunning(
                f"another loader is running on the raw database {loader.database}: {loader.holder()}. "
                "Stop it first, then run `cinema load --resync` again."
            )
        return Summary(watermark=loader.watermark)
    finally:
        loader.close()


def _wait_for_service(settings: Settings, target: int, stop: threading.Event, deadline: float) -> Summary:
    began = time.monotonic()
    watermark: int | None = None

    def caught_up() -> bool:
        nonlocal watermark
        watermark = scrape_watermark(settings)
        return watermark is not None and watermark >= target

    def short() -> LoaderError:
        return LoaderError(
            f"after {time.monotonic() - began:.0f}s the loader service "
            f"({settings.loader.metrics_host}:{settings.loader.metrics_port}) reports watermark {watermark}, "
            f"short of {target}; check its logs and /healthz"
        )

    done = poll(
        caught_up,
        timeout_seconds=deadline - began,
        interval=settings.loader.poll_interval_seconds,
        timed_out=short,
        stop=stop,
    )
    if done:
        return Summary(watermark=watermark or 0, caught_up=True, seconds=time.monotonic() - began)
    return Summary(seconds=time.monotonic() - began)
