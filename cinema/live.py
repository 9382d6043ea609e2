"""`cinema live`: events stream in, the loader follows, the marts refresh every 30 s.

One supervised process tree with one warehouse owner. The producer runs as a child
(`cinema generate --rate R --service`, its own interpreter, so generating events never
competes with the loader for this one's GIL); the loader (`loader.service.run`, as
`cinema load --follow` runs it) is a thread of this process, and the refresh loop runs
incremental dbt in this process's main thread every MARTS_REFRESH_SECONDS (start to
start). Embedded ClickHouse allows one process per data directory, so the loader and
dbt share this process's chdb engine: loading goes on while dbt runs, if slower
(README, "Live mode", has the measured cost). A status line shows events/s arriving in the raw table, the raw
lag and how current the marts are. Ctrl-C or SIGTERM stops the producer (its chunk
ledger makes a restart with the same --seed resume without duplicates), lets the loader
finish its batch and the refresh its run, and returns with nothing left running.

Every refresh is recorded in cinema_marts._mart_refreshes: the loader's watermark when
it began (every event below it is in the marts it built) and when it finished, from
which `make bench` measures mart freshness per event. `--refresh-once` is one such
refresh, what the cinema_refresh DAG runs after the loader has caught up.
"""

from __future__ import annotations

import ctypes
import logging
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
from clickhouse_connect.driver.client import Client

from cinema.names import MARTS_DATABASE
from cinema.paths import executable
from cinema.settings import Settings
from cinema.signals import stop_on_signals

log = logging.getLogger("cinema.live")

REFRESHES = f"{MARTS_DATABASE}._mart_refreshes"
# Once the marts exist (seeds, views, every model built), only what new events change.
INCREMENTAL_SELECTION = "int_viewing_events_sessionized+"
STATUS_SECONDS = 1.0
# Without a terminal, the status goes to the log this often.
STATUS_LOG_SECONDS = 10.0
PRODUCER_STOP_SECONDS = 30.0
PR_SET_PDEATHSIG = 1


class LiveError(click.ClickException):
    """A part of the live pipeline failed; the message says which and where its log is."""


@dataclass(frozen=True)
class Refresh:
    # Every raw event below this subscriber transaction id was loaded when the run began.
    watermark: int
    started_at: float
    finished_at: float
    succeeded: bool

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


def ensure_refresh_log(client: Client) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {MARTS_DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {REFRESHES} (watermark UInt64, started_at DateTime64(6, 'UTC'), "
        "finished_at DateTime64(6, 'UTC'), succeeded Bool) ENGINE = MergeTree ORDER BY finished_at"
    )


def refresh_marts(settings: Settings, client: Client, watermark: int, *, first: bool) -> Refresh:
    """One incremental dbt run of the marts, recorded in the refresh log."""
    from cinema.transform import run_dbt

    started_at = time.time()
    if first:
        succeeded = run_dbt(settings, ["--quiet", "seed"]) == 0 and run_dbt(settings, ["--quiet", "run"]) == 0
    else:
        # Nothing reads the manifest and run results of a refresh: not writing them shortens each one.
        succeeded = run_dbt(settings, ["--quiet", "--no-write-json", "run", "--select", INCREMENTAL_SELECTION]) == 0
    refresh = Refresh(watermark, started_at, time.time(), succeeded)
    client.insert(
        REFRESHES,
        [
            (
                refresh.watermark,
                datetime.fromtimestamp(refresh.started_at, UTC),
                datetime.fromtimestamp(refresh.finished_at, UTC),
                refresh.succeeded,
            )
        ],
        column_names=["watermark", "started_at", "finished_at", "succeeded"],
    )
    return refresh


def marts_as_of(client: Client) -> datetime | None:
    """The as-of time of the viewing_sessions mart, None before its first build."""
    exists = client.query(
        f"SELECT count() FROM system.tables WHERE database = '{MARTS_DATABASE}' AND name = 'viewing_sessions'"
    ).result_rows[0][0]
    if not exists:
        return None
    value = client.query(f"SELECT max(as_of) FROM {MARTS_DATABASE}.viewing_sessions").result_rows[0][0]
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.year > 1970 else None


def raw_events(client: Client, settings: Settings) -> int:
    database = settings.warehouse.raw_database
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {database:String} AND name = 'viewing_events'",
        parameters={"database": database},
    ).result_rows[0][0]
    return int(client.query(f"SELECT count() FROM {database}.viewing_events").result_rows[0][0]) if exists else 0


class Status:
    """The live status line: rewritten in place on a terminal, logged now and then otherwise."""

    def __init__(self) -> None:
        self._terminal = sys.stderr.isatty()
        self._last: tuple[float, int] | None = None
        self._logged_at = 0.0
        self.events_per_second = 0.0

    def show(self, events: int, lag_seconds: float | None, as_of: datetime | None, refresh: Refresh | None) -> None:
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            self.events_per_second = (events - self._last[1]) / (now - self._last[0])
        self._last = (now, events)
        lag = "-" if lag_seconds is None else f"{lag_seconds:.1f} s"
        marts = "not built yet"
        if as_of is not None:
            marts = f"as of {as_of:%H:%M:%S} UTC ({(datetime.now(UTC) - as_of).total_seconds():.0f} s ago)"
        last = "" if refresh is None else f", last refresh {refresh.seconds:.1f} s"
        line = f"{self.events_per_second:,.0f} events/s | raw lag {lag} | {events:,} events | marts {marts}{last}"
        if self._terminal:
            click.echo(f"\r\033[K{line}", err=True, nl=False)
        elif now - self._logged_at >= STATUS_LOG_SECONDS:
            self._logged_at = now
            log.info(line)

    def close(self) -> None:
        if self._terminal:
            click.echo("", err=True)


def _die_with_parent() -> None:
    """In the producer child: SIGTERM when this process dies, even by kill -9."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_producer(rate: float, seed: int, options: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        return subprocess.Popen(
            [executable("cinema"), "generate", "--service", "--rate", str(rate), "--seed", str(seed), *options],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - started before any thread of this process
        )


def stop_producer(producer: subprocess.Popen[bytes]) -> None:
    if producer.poll() is None:
        producer.send_signal(signal.SIGTERM)
        try:
            producer.wait(PRODUCER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()


class _LoaderThread(threading.Thread):
    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        from loader.metrics import Metrics

        super().__init__(name="live-loader")
        self.metrics = Metrics()
        self.error: BaseException | None = None
        self._settings = settings
        self._stopping = stop

    def run(self) -> None:
        from loader.service import run

        try:
            run(self._settings, self._stopping, target=None, metrics=self.metrics)
        except BaseException as error:  # handed to the main thread, which reports it
            self.error = error
            self._stopping.set()


def run_live(
    settings: Settings,
    stop: threading.Event,
    *,
    rate: float,
    seed: int,
    producer_options: list[str],
    duration_seconds: float | None,
) -> list[Refresh]:
    """Run until `stop` is set (or `duration_seconds` pass); the refreshes made."""
    from cinema.warehouse import connect

    producer_log = settings.state_dir / "logs" / "live-producer.log"
    producer = start_producer(rate, seed, producer_options, producer_log)
    loader = _LoaderThread(settings, stop)
    loader.start()
    refreshes: list[Refresh] = []
    status = Status()
    client = connect(settings)
    ends_at = None if duration_seconds is None else time.monotonic() + duration_seconds
    cadence = settings.marts_refresh_seconds
    next_refresh = time.monotonic()
    try:
        ensure_refresh_log(client)
        while not stop.is_set():
            if producer.poll() is not None:
                raise LiveError(f"the producer exited with {producer.returncode}; its log: {producer_log}")
            if ends_at is not None and time.monotonic() >= ends_at:
                break
            watermark = loader.metrics.watermark
            # The first refresh waits for the loader's first batch: dbt reads its tables.
            if time.monotonic() >= next_refresh and watermark > 0:
                # Seeds, views and every model only while the marts do not exist yet: a restart
                # refreshes incrementally at once, as `--refresh-once` does.
                first = not refreshes and marts_as_of(client) is None
                refresh = refresh_marts(settings, client, watermark, first=first)
                if not refresh.succeeded:
                    raise LiveError(
                        "a refresh of the marts failed (dbt's errors are above); `cinema transform` shows why"
                    )
                refreshes.append(refresh)
                # Start to start: a run longer than the cadence is followed at once.
                next_refresh = max(next_refresh + cadence, time.monotonic())
            status.show(
                raw_events(client, settings),
                loader.metrics.lag_seconds(),
                marts_as_of(client),
                refreshes[-1] if refreshes else None,
            )
            stop.wait(max(0.0, min(STATUS_SECONDS, next_refresh - time.monotonic())))
    finally:
        status.close()
        stop.set()
        stop_producer(producer)
        loader.join()
        client.close()
    if loader.error is not None:
        raise LiveError(f"the loader stopped: {loader.error}")
    return refreshes


@click.command("live")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1_000.0,
    show_default=True,
    help="Events per second the producer writes.",
)
@click.option("--seed", type=int, default=None, help="The stream's seed; the same one resumes it [default: random].")
@click.option("--users", type=click.IntRange(min=1), default=2_000, show_default=True, help="Households.")
@click.option("--writers", type=click.IntRange(1, 64), default=4, show_default=True, help="Producer writers.")
@click.option("--dirty-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Dirty sessions.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds [default: until Ctrl-C or SIGTERM].",
)
@click.option(
    "--refresh-once",
    is_flag=True,
    help="Only refresh the marts once from what is loaded (the cinema_refresh DAG's task).",
)
def live(
    rate: float,
    seed: int | None,
    users: int,
    writers: int,
    dirty_rate: float,
    duration: float | None,
    refresh_once: bool,
) -> None:
    """Stream events, load them and keep the marts current (every MARTS_REFRESH_SECONDS)."""
    from cinema.context import settings_from_context
    from cinema.warehouse import warehouse_client

    settings = settings_from_context()
    if refresh_once:
        from cinema.transform import missing_raw_tables

        if missing := missing_raw_tables(settings):
            raise LiveError(
                f"nothing to refresh, the raw tables are missing: {', '.join(missing)}. "
                "Load the warehouse first: `cinema load --until-caught-up`."
            )
        with warehouse_client(settings) as client:
            ensure_refresh_log(client)
            watermark = _loaded_watermark(client, settings)
            # Seeds, views and every model only while the marts do not exist yet.
            refresh = refresh_marts(settings, client, watermark, first=marts_as_of(client) is None)
        if not refresh.succeeded:
            raise LiveError("the refresh of the marts failed (dbt's errors are above)")
        click.echo(f"marts refreshed in {refresh.seconds:.1f}s up to loader watermark {watermark}")
        return
    if settings.warehouse.interface == "chdb":
        from cinema import stack as embedded

        embedded.up(settings)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    click.echo(
        f"live: {rate:,.0f} events/s (seed {seed}), marts every {settings.marts_refresh_seconds:g}s; Ctrl-C stops",
        err=True,
    )
    options = ["--users", str(users), "--writers", str(writers), "--dirty-rate", str(dirty_rate)]
    with stop_on_signals("stopping the producer; the loader finishes its batch, the refresh its run") as stop:
        refreshes = run_live(settings, stop, rate=rate, seed=seed, producer_options=options, duration_seconds=duration)
    click.echo(f"live: stopped after {len(refreshes)} refresh(es) of the marts", err=True)


def _loaded_watermark(client: Client, settings: Settings) -> int:
    """The loader's committed watermark, from its batch log."""
    from loader.schema import table_ref

    table = table_ref(settings.warehouse.raw_database, "_loader_batches")
    return int(client.query(f"SELECT max(watermark) FROM {table}").result_rows[0][0])
