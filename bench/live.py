"""Live mode and the pipeline's capacity.

1. Mart freshness: `cinema live --rate 5000` with the default cadence (MARTS_REFRESH_SECONDS
   unset: 60 s) into a warehouse of its own, then on the same warehouse at a short cadence
   (10 s). Per event: from its publisher insert (`received_at`) until the end of the first
   refresh that began with it loaded (`cinema_marts._mart_refreshes` holds each refresh's
   loader watermark and end). Counted are the events the run's first refresh did not
   hold: that one also builds seeds and every model over what was loaded before the run,
   once per start. Events loaded after the last refresh began have no mart time yet and
   are not counted either.
2. Capacity: the producer service and `cinema load --follow` at offered rates stepped up
   (5k, 10k, 20k, 40k ... events/s) until one fails, then bisected between the last held
   and the first failed rate. Each step is held for a while after the producer's ramp and
   is sustained when raw freshness (publisher insert until its loader batch is visible in
   ClickHouse) has p99 <= 1 s over the hold and the publisher received at least 90 % of
   the offered rate. The capacity is the highest rate sustained with every lower rate
   tried sustained too; it is compared with replication's standalone apply rate measured
   in the same `make bench` run (bench/replication.py). Over each hold the cores each
   part of the pipeline kept busy are read from /proc (bench/cpu.py): at the capacity and
   at the first failed rate they show what bounds it. A step that fails while other work
   kept the machine busy (BUSY_ELSEWHERE_CORES) is measured once more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench import cpu
from bench.loader import RAW, latency_quantiles, raw_latency_sql, subscriber_xmax, wait_until, with_warehouse
from cinema import db, sandbox
from cinema.live import REFRESHES
from cinema.paths import executable
from cinema.replication import wait_for_subscriber
from cinema.settings import MARTS_REFRESH_SECONDS_DEFAULT, Settings
from cinema.warehouse import warehouse_client
from loader.metrics import probe, scrape_watermark
from loader.schema import table_ref
from producer.service import WINDOW_MS

CINEMA = executable("cinema")
SEED = 818181
P99_GOAL_SECONDS = 1.0
ACHIEVED_SHARE = 0.9
# The capacity producer's sessions heartbeat every 5 s, so its pool of viewers fills
# (and its rate is reached) within 5 s of starting.
CAPACITY_HEARTBEAT_SECONDS = 5
RAMP_SECONDS = CAPACITY_HEARTBEAT_SECONDS + 1.0
# A producer more than this behind the clock is still filling its pool of viewers ...
PRODUCER_CURRENT_SECONDS = 1.0
# ... and one that has not caught up after this long cannot offer the rate (its step fails).
RAMP_TIMEOUT_SECONDS = 60.0
# Bisected rates are rounded to this many events/s.
RATE_GRAIN = 500.0
# A failed step during which the machine spent this many cores beyond the pipeline (a quarter of
# this 2-core machine) on other work is measured once more.
BUSY_ELSEWHERE_CORES = 0.5


class NoMartTime(RuntimeError):
    """A live run ended before a refresh after its first one: no event has a mart time."""


def mart_freshness(
    settings: Settings, rate: float, seconds: float, cadence_seconds: float | None = None, attempt: int = 0
) -> dict[str, float]:
    """`cinema live` at `rate` for `seconds`, refreshing every `cadence_seconds` (None: the
    default, MARTS_REFRESH_SECONDS unset); publisher insert to marts, once the run's first
    refresh (seeds, every model over what was loaded before) has begun."""
    own = with_warehouse(settings, settings.state_dir / "bench-live" / "warehouse")
    live_from = subscriber_xmax(settings)
    run_environment = {**os.environ, "CLICKHOUSE_CHDB_PATH": str(own.warehouse.chdb_path)}
    run_environment.pop("MARTS_REFRESH_SECONDS", None)
    if cadence_seconds is not None:
        run_environment["MARTS_REFRESH_SECONDS"] = str(cadence_seconds)
    began = time.time()
    # A seed per run: the same seed would resume the earlier run's stream.
    seed = SEED + int(cadence_seconds or 0) + 1000 * attempt
    result = subprocess.run(
        [CINEMA, "live", "--rate", str(rate), "--duration", str(seconds), "--seed", str(seed)],
        env=run_environment,
        cwd=settings.state_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cinema live exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    events = table_ref(RAW, "viewing_events")
    this_run = f"succeeded AND started_at >= fromUnixTimestamp64Micro({int(began * 1e6)}, 'UTC')"
    with warehouse_client(own) as client:
        first_watermark, first_finished, refreshes, mean_seconds, longest = client.query(
            "SELECT argMin(watermark, started_at), toUnixTimestamp64Micro(argMin(finished_at, started_at)), count(), "
            "avg(dateDiff('microsecond', started_at, finished_at)) / 1e6, "
            f"max(dateDiff('microsecond', started_at, finished_at)) / 1e6 FROM {REFRESHES} WHERE {this_run}"
        ).result_rows[0]
    # The events the first refresh did not hold: from then on, the cadence alone decides.
    counted = f"_xid >= {max(live_from, int(first_watermark))}"
    freshness = latency_quantiles(
        own,
        "SELECT dateDiff('microsecond', e.received_at, r.finished_at) / 1e6 AS latency FROM"
        f" (SELECT 0 AS k, _xid, received_at FROM {events} WHERE {counted}) e"
        f" ASOF JOIN (SELECT 0 AS k, watermark, finished_at FROM {REFRESHES} WHERE {this_run}) r"
        " ON e.k = r.k AND e._xid < r.watermark",
    )
    if not freshness["events"]:
        raise NoMartTime(f"no event reached the marts in {seconds:.0f}s: the run must outlast two refreshes")
    # Raw freshness in the same run: what sharing the process with dbt costs the loader, and
    # the same once the first refresh (every model over what was loaded before) is over.
    raw = latency_quantiles(own, raw_latency_sql(f"_xid >= {live_from}"))
    raw_after_first = latency_quantiles(
        own,
        raw_latency_sql(
            f"_xid >= {live_from} AND received_at >= fromUnixTimestamp64Micro({int(first_finished)}, 'UTC')"
        ),
    )
    return {
        "rate_events_per_second": rate,
        "cadence_seconds": MARTS_REFRESH_SECONDS_DEFAULT if cadence_seconds is None else cadence_seconds,
        "run_seconds": seconds,
        "mart_freshness_events": freshness["events"],
        "mart_freshness_p50_seconds": freshness["p50_seconds"],
        "mart_freshness_p95_seconds": freshness["p95_seconds"],
        "mart_freshness_p99_seconds": freshness["p99_seconds"],
        "mart_freshness_max_seconds": freshness["max_seconds"],
        "raw_freshness_p50_seconds": raw["p50_seconds"],
        "raw_freshness_p99_seconds": raw["p99_seconds"],
        "raw_freshness_max_seconds": raw["max_seconds"],
        "raw_freshness_p99_seconds_after_first_refresh": raw_after_first["p99_seconds"],
        "raw_freshness_max_seconds_after_first_refresh": raw_after_first["max_seconds"],
        "refreshes": float(refreshes),
        "refresh_mean_seconds": float(mean_seconds),
        "refresh_max_seconds": float(longest),
    }


def live_figures(
    settings: Settings, rate: float, seconds: float, short_cadence: float, short_seconds: float
) -> dict[str, float]:
    """Mart freshness at the default cadence, then at `short_cadence` on the same warehouse
    (its marts already built): whether the 15 s aim is a setting away."""
    figures = mart_freshness(settings, rate, seconds)
    # The short run must hold its first refresh and more, however long refreshes take on this
    # machine at the time; one that still ended too soon is run again, twice as long.
    short_seconds = max(short_seconds, 2 * figures["refresh_mean_seconds"] + short_cadence)
    try:
        short = mart_freshness(settings, rate, short_seconds, short_cadence)
    except NoMartTime:
        short = mart_freshness(settings, rate, 2 * short_seconds, short_cadence, attempt=1)
    suffix = f"_at_{short_cadence:g}s_cadence"
    figures |= {f"{name}{suffix}": value for name, value in short.items() if name not in ("rate_events_per_second",)}
    return figures


@dataclass(frozen=True)
class Step:
    rate: float
    hold_from: float
    hold_until: float
    # Cores each part of the pipeline kept busy over the hold (bench/cpu.py).
    cpu_cores: dict[str, float]


def _producer_behind_seconds(settings: Settings, since: float) -> float | None:
    """How far behind the clock the newest window the producer started after `since` has
    committed is (its run key ends in the stream's anchor; chunk n ends 100 ms after n-1)."""
    with db.closing(db.admin(settings, "publisher")) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT run_key, max(chunk_no) FROM producer_batches WHERE run_key LIKE 'live-service-%%' "
            "AND written_at >= to_timestamp(%s) GROUP BY run_key ORDER BY max(written_at) DESC LIMIT 1",
            (since,),
        )
        row = cursor.fetchone()
    if row is None:
        return None
    anchor_ms = int(row[0].rsplit("-", 1)[1])
    return time.time() - (anchor_ms + (int(row[1]) + 1) * WINDOW_MS) / 1000


def _step(
    settings: Settings, probed: Settings, loader_pid: int, rate: float, hold_seconds: float, workdir: Path
) -> Step:
    started = time.time()
    producer = subprocess.Popen(
        [
            *(CINEMA, "generate", "--service", "--rate", str(rate), "--seed", str(SEED + int(rate))),
            *("--heartbeat-seconds", str(CAPACITY_HEARTBEAT_SECONDS), "--writers", "4"),
        ],
        env=dict(os.environ),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def processes() -> dict[int, str]:
        return cpu.stack_processes(settings, {"producer": producer.pid, "loader": loader_pid, "bench": os.getpid()})

    try:
        # The hold begins once the producer writes each window as it passes: the rate is then offered.
        deadline = started + RAMP_TIMEOUT_SECONDS
        while time.time() < deadline:
            time.sleep(0.5)
            behind = _producer_behind_seconds(probed, started)
            if behind is not None and behind < PRODUCER_CURRENT_SECONDS and time.time() > started + RAMP_SECONDS:
                break
        hold_from = time.time()
        first = cpu.sample(processes)
        time.sleep(hold_seconds)
        last = cpu.sample(processes)
        hold_until = time.time()
    finally:
        producer.send_signal(signal.SIGTERM)
        producer.wait(60)
    return Step(rate, hold_from, hold_until, cpu.cores(first, last))


def _step_figures(settings: Settings, step: Step) -> dict[str, float]:
    window = (
        f"received_at >= fromUnixTimestamp64Micro({int(step.hold_from * 1e6)}, 'UTC') "
        f"AND received_at < fromUnixTimestamp64Micro({int(step.hold_until * 1e6)}, 'UTC')"
    )
    freshness = latency_quantiles(settings, raw_latency_sql(window))
    achieved = freshness["events"] / (step.hold_until - step.hold_from)
    sustained = (
        freshness["events"] > 0
        and freshness["p99_seconds"] <= P99_GOAL_SECONDS
        and achieved >= ACHIEVED_SHARE * step.rate
    )
    prefix = f"offered_{int(step.rate)}"
    return {
        f"{prefix}_received_events_per_second": achieved,
        **{f"{prefix}_freshness_{name}": value for name, value in freshness.items() if name != "events"},
        **{f"{prefix}_cpu_cores_{component}": value for component, value in step.cpu_cores.items()},
        f"{prefix}_sustained": float(sustained),
    }


def search(coarse: Sequence[float], bisections: int, sustained: Callable[[float], bool]) -> tuple[float, float | None]:
    """The highest rate `sustained` holds with every lower rate tried held too, and the
    lowest rate tried that failed (None: every coarse step held, the capacity is at least
    the last). The coarse steps go up until one fails; then up to `bisections` steps
    halve the gap between the last held and the first failed rate (rounded down to RATE_GRAIN)."""
    held, failed = 0.0, None
    for rate in coarse:
        if not sustained(rate):
            failed = rate
            break
        held = rate
    for _ in range(bisections):
        if failed is None:
            break
        middle = (held + failed) / 2 // RATE_GRAIN * RATE_GRAIN
        if not held < middle < failed:
            break
        if sustained(middle):
            held = middle
        else:
            failed = middle
    return held, failed


@contextlib.contextmanager
def _loader_service(environment: dict[str, str], probed: Settings, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    service = subprocess.Popen(
        [CINEMA, "load", "--follow"], env=environment, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: probe(probed)[0], 300, "the loader service to become healthy")
        yield service
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(120)


def capacity(settings: Settings, rates: Sequence[float], hold_seconds: float, bisections: int) -> dict[str, float]:
    """Step the offered rate up, then bisect the knee; each step with a loader service of
    its own on one warehouse, whose step is judged once the service has stopped (only
    one process may open the embedded warehouse)."""
    workdir = settings.state_dir / "bench-capacity"
    workdir.mkdir(exist_ok=True)
    own = with_warehouse(settings, workdir / "warehouse")
    port = sandbox.free_port()
    probed = replace(own, loader=replace(own.loader, metrics_host="127.0.0.1", metrics_port=port))
    loader_environment = {
        **os.environ,
        "CLICKHOUSE_CHDB_PATH": str(own.warehouse.chdb_path),
        "LOADER_METRICS_PORT": str(port),
    }
    figures: dict[str, float] = {"hold_seconds": hold_seconds, "p99_goal_seconds": P99_GOAL_SECONDS}
    by_rate: dict[float, dict[str, float]] = {}

    def measure(rate: float) -> dict[str, float]:
        with _loader_service(loader_environment, probed, workdir) as service:
            # What the subscriber holds first (other sections, earlier steps): the step measures the stream alone.
            backlog = subscriber_xmax(settings)
            wait_until(lambda: (scrape_watermark(probed) or 0) >= backlog, 900, "the loader to load the backlog")
            step = _step(settings, probed, service.pid, rate, hold_seconds, workdir)
            wait_for_subscriber(settings, timeout_seconds=900)
            target = subscriber_xmax(settings)
            wait_until(lambda: (scrape_watermark(probed) or 0) >= target, 900, "the loader to load the step")
        return _step_figures(own, step)

    def sustained(rate: float) -> bool:
        prefix = f"offered_{int(rate)}"
        step_figures = measure(rate) | {f"{prefix}_attempts": 1.0}
        # The capacity is the pipeline's: a step failed while other work kept the machine busy is measured again.
        if (
            not step_figures[f"{prefix}_sustained"]
            and step_figures[f"{prefix}_cpu_cores_elsewhere"] > BUSY_ELSEWHERE_CORES
        ):
            step_figures = measure(rate) | {f"{prefix}_attempts": 2.0}
        by_rate[rate] = step_figures
        figures.update(step_figures)
        return bool(step_figures[f"{prefix}_sustained"])

    held, failed = search(rates, bisections, sustained)
    figures["sustained_events_per_second"] = held
    figures["lowest_failed_events_per_second"] = 0.0 if failed is None else failed
    # Where the time went at the capacity and at the first rate beyond it: what bounds it.
    for name, rate in (("cpu_cores", held), ("failed_cpu_cores", failed)):
        prefix = f"offered_{int(rate or 0)}_cpu_cores_"
        figures |= {
            f"{name}_{key.removeprefix(prefix)}": value
            for key, value in by_rate.get(rate or 0.0, {}).items()
            if key.startswith(prefix)
        }
    return figures
