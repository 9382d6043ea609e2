"""Live mode and the pipeline's capacity.

1. Mart freshness: `cinema live --rate 5000` with the default cadence (MARTS_REFRESH_SECONDS
   unset: 60 s) into a warehouse of its own. Per event: from its publisher insert
   (`received_at`) until the end of the first refresh that began with it loaded
   (`cinema_marts._mart_refreshes` holds each refresh's loader watermark and end). Events
   loaded after the last refresh began have no mart time yet and are not counted.
2. Capacity: the producer service and `cinema load --follow` at offered rates stepped up
   (5k, 10k, 20k, 40k ... events/s), each held for a while after the producer's ramp. A
   step is sustained when raw freshness (publisher insert until its loader batch is
   visible in ClickHouse) has p99 <= 1 s over the hold and the publisher received at
   least 90 % of the offered rate. The capacity is the highest step sustained with every
   step below it sustained too; it is compared with replication's standalone apply rate
   measured in the same `make bench` run (bench/replication.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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
# A loader this far behind during a step has clearly lost the stream: no higher step is tried.
HOPELESS_LAG_SECONDS = 10.0


def mart_freshness(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    """`cinema live` at `rate` for `seconds` with the default cadence; publisher insert to marts."""
    environment = dict(os.environ)
    own = with_warehouse(settings, settings.state_dir / "bench-live" / "warehouse")
    live_from = subscriber_xmax(settings)
    run_environment = {**environment, "CLICKHOUSE_CHDB_PATH": str(own.warehouse.chdb_path)}
    run_environment.pop("MARTS_REFRESH_SECONDS", None)
    result = subprocess.run(
        [CINEMA, "live", "--rate", str(rate), "--duration", str(seconds), "--seed", str(SEED)],
        env=run_environment,
        cwd=settings.state_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cinema live exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    events = table_ref(RAW, "viewing_events")
    freshness = latency_quantiles(
        own,
        "SELECT dateDiff('microsecond', e.received_at, r.finished_at) / 1e6 AS latency FROM"
        f" (SELECT 0 AS k, _xid, received_at FROM {events} WHERE _xid >= {live_from}) e"
        f" ASOF JOIN (SELECT 0 AS k, watermark, finished_at FROM {REFRESHES} WHERE succeeded) r"
        " ON e.k = r.k AND e._xid < r.watermark",
    )
    if not freshness["events"]:
        raise RuntimeError(f"no event reached the marts in {seconds:.0f}s: the run must outlast a refresh cadence")
    # Raw freshness in the same run: what sharing the process with dbt costs the loader.
    raw = latency_quantiles(own, raw_latency_sql(f"_xid >= {live_from}"))
    with warehouse_client(own) as client:
        refreshes, mean_seconds, longest = client.query(
            "SELECT count(), avg(dateDiff('microsecond', started_at, finished_at)) / 1e6, "
            f"max(dateDiff('microsecond', started_at, finished_at)) / 1e6 FROM {REFRESHES}"
        ).result_rows[0]
    return {
        "rate_events_per_second": rate,
        "cadence_seconds": MARTS_REFRESH_SECONDS_DEFAULT,
        "run_seconds": seconds,
        "mart_freshness_events": freshness["events"],
        "mart_freshness_p50_seconds": freshness["p50_seconds"],
        "mart_freshness_p95_seconds": freshness["p95_seconds"],
        "mart_freshness_p99_seconds": freshness["p99_seconds"],
        "mart_freshness_max_seconds": freshness["max_seconds"],
        "raw_freshness_p50_seconds": raw["p50_seconds"],
        "raw_freshness_p99_seconds": raw["p99_seconds"],
        "raw_freshness_max_seconds": raw["max_seconds"],
        "refreshes": float(refreshes),
        "refresh_mean_seconds": float(mean_seconds),
        "refresh_max_seconds": float(longest),
    }


@dataclass(frozen=True)
class Step:
    rate: float
    hold_from: float
    hold_until: float
    worst_lag_seconds: float


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


def _step(environment: dict[str, str], probed: Settings, rate: float, hold_seconds: float, workdir: Path) -> Step:
    started = time.time()
    producer = subprocess.Popen(
        [
            *(CINEMA, "generate", "--service", "--rate", str(rate), "--seed", str(SEED + int(rate))),
            *("--heartbeat-seconds", str(CAPACITY_HEARTBEAT_SECONDS), "--writers", "4"),
        ],
        env=environment,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worst_lag = 0.0
    try:
        # The hold begins once the producer writes each window as it passes: the rate is then offered.
        deadline = started + RAMP_TIMEOUT_SECONDS
        while time.time() < deadline:
            time.sleep(0.5)
            behind = _producer_behind_seconds(probed, started)
            if behind is not None and behind < PRODUCER_CURRENT_SECONDS and time.time() > started + RAMP_SECONDS:
                break
        hold_from = time.time()
        while time.time() < hold_from + hold_seconds:
            time.sleep(0.5)
            _, report = probe(probed)
            with contextlib.suppress(ValueError):
                worst_lag = max(worst_lag, float(json.loads(report).get("lag_seconds") or 0.0))
        hold_until = time.time()
    finally:
        producer.send_signal(signal.SIGTERM)
        producer.wait(60)
    return Step(rate, hold_from, hold_until, worst_lag)


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
        f"{prefix}_sustained": float(sustained),
    }


def capacity(settings: Settings, rates: Sequence[float], hold_seconds: float) -> dict[str, float]:
    """Step the offered rate up under one loader service; the highest rate sustained."""
    environment = dict(os.environ)
    workdir = settings.state_dir / "bench-capacity"
    workdir.mkdir(exist_ok=True)
    own = with_warehouse(settings, workdir / "warehouse")
    port = sandbox.free_port()
    probed = replace(own, loader=replace(own.loader, metrics_host="127.0.0.1", metrics_port=port))
    loader_environment = {
        **environment,
        "CLICKHOUSE_CHDB_PATH": str(own.warehouse.chdb_path),
        "LOADER_METRICS_PORT": str(port),
    }
    service = subprocess.Popen(
        [CINEMA, "load", "--follow"],
        env=loader_environment,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    steps: list[Step] = []
    try:
        wait_until(lambda: probe(probed)[0], 300, "the loader service to become healthy")
        # The backlog of the other sections first, so the steps measure the stream alone.
        backlog = subscriber_xmax(settings)
        wait_until(lambda: (scrape_watermark(probed) or 0) >= backlog, 600, "the loader to load the backlog")
        for rate in rates:
            steps.append(_step(environment, probed, rate, hold_seconds, workdir))
            if steps[-1].worst_lag_seconds > HOPELESS_LAG_SECONDS:
                break
        wait_for_subscriber(settings, timeout_seconds=900)
        target = subscriber_xmax(settings)
        wait_until(lambda: (scrape_watermark(probed) or 0) >= target, 900, "the loader to load the steps")
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(120)
    figures: dict[str, float] = {"hold_seconds": hold_seconds, "p99_goal_seconds": P99_GOAL_SECONDS}
    sustained = 0.0
    every_lower_step_sustained = True
    for step in steps:
        step_figures = _step_figures(own, step)
        figures |= step_figures
        every_lower_step_sustained = every_lower_step_sustained and bool(
            step_figures[f"offered_{int(step.rate)}_sustained"]
        )
        if every_lower_step_sustained:
            sustained = step.rate
    figures["sustained_events_per_second"] = sustained
    return figures
