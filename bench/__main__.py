"""`python -m bench`: measure every stage on a fresh embedded stack, print a table, write build/bench.json.

Each figure is measured in the same run as its reference (the producer beside a raw
COPY of the same rows, the loader beside ClickHouse pulling the same rows itself), so
ratios hold even when this shared machine's speed drifts. Sizes are options: the
defaults finish in a few minutes; `--full` uses the sizes the issues quote.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bench.dbt import label as dbt_label
from cinema import sandbox
from cinema import stack as embedded
from cinema.console import print_table
from cinema.paths import executable
from cinema.settings import Settings, load_settings

CINEMA = executable("cinema")


@dataclass(frozen=True)
class Sizes:
    producer_events: int
    replication_events: int
    loader_events: int
    live_seconds: float
    dbt_events: tuple[int, ...]
    # `cinema live` at LIVE_RATE with the default cadence: long enough for the first
    # refresh and at least one whole cadence after it, whose events' mart freshness is
    # then measured; then as long at SHORT_CADENCE_SECONDS.
    mart_live_seconds: float
    short_cadence_live_seconds: float
    # Coarse rates stepped up until one fails, then this many bisections of the knee.
    capacity_rates: tuple[float, ...]
    capacity_bisections: int
    capacity_hold_seconds: float


QUICK = Sizes(
    200_000,
    200_000,
    200_000,
    live_seconds=20,
    dbt_events=(200_000, 1_000_000),
    mart_live_seconds=75,
    short_cadence_live_seconds=50,
    capacity_rates=(5_000, 10_000, 20_000, 40_000, 80_000),
    capacity_bisections=2,
    capacity_hold_seconds=10,
)
FULL = Sizes(
    1_000_000,
    1_000_000,
    1_000_000,
    live_seconds=60,
    dbt_events=(1_000_000, 10_000_000),
    mart_live_seconds=150,
    short_cadence_live_seconds=60,
    capacity_rates=(5_000, 10_000, 20_000, 40_000, 80_000),
    capacity_bisections=3,
    capacity_hold_seconds=30,
)
LIVE_RATE = 5_000.0
SHORT_CADENCE_SECONDS = 10.0
CAPACITY_GOAL_RATIO = 0.8


@dataclass(frozen=True)
class Figure:
    stage: str
    what: str
    value: str
    reference: str = ""
    ratio: str = ""


def _durability_figures(replication: dict[str, float]) -> list[Figure]:
    """Apply rates with the subscription's synchronous_commit off (chosen) and on, same run."""
    rows = []
    for size in (5000, 50):
        off = replication[f"replication_rows_per_second_{size}_row_transactions_sync_off"]
        on = replication[f"replication_rows_per_second_{size}_row_transactions_sync_on"]
        rows.append(
            Figure(
                "replication",
                f"apply rows/s, {size}-row transactions, synchronous_commit off (chosen; PostgreSQL's default)",
                f"{off:,.0f}",
                f"synchronous_commit on: {on:,.0f}",
                f"{on / off:.2f}",
            )
        )
    return rows


def _cpu_figures(capacity: dict[str, float]) -> list[Figure]:
    """Cores each part kept busy at the capacity and at the first failed rate."""
    rows = []
    for prefix, rate in (("cpu_cores_", "sustained"), ("failed_cpu_cores_", "lowest_failed")):
        parts = {key.removeprefix(prefix): value for key, value in capacity.items() if key.startswith(prefix)}
        if not parts:
            continue
        machine = parts.pop("machine")
        rows.append(
            Figure(
                "capacity",
                f"cores busy at {capacity[f'{rate}_events_per_second']:,.0f} events/s offered",
                f"{machine:.2f} of {os.cpu_count()}",
                ", ".join(f"{name} {value:.2f}" for name, value in sorted(parts.items(), key=lambda part: -part[1])),
            )
        )
    return rows


def _figures(results: dict[str, dict[str, float]], sizes: Sizes) -> list[Figure]:
    """The table: each figure beside the reference measured in the same run."""
    producer, replication = results["producer"], results["replication"]
    loader, dbt = results["loader"], results["dbt"]
    live, capacity = results["live"], results["capacity"]
    rows = [
        Figure(
            "producer",
            "events/s into the publisher (whole `cinema generate`, 4 writers)",
            f"{producer['producer_events_per_second']:,.0f}",
            f"raw COPY of the same rows: {producer['raw_copy_events_per_second']:,.0f}",
            f"{producer['producer_to_copy_ratio']:.2f}",
        ),
        Figure(
            "producer",
            "against psycopg 3 binary COPY, same rows, 4 writers",
            f"{producer['producer_events_per_second']:,.0f}",
            f"binary COPY: {producer['copy_binary_events_per_second']:,.0f}; "
            f"generation alone: {producer['generation_events_per_second']:,.0f}",
            f"{producer['producer_to_copy_binary_ratio']:.2f} (goal >= 0.7)",
        ),
        Figure(
            "replication",
            f"catch-up of a {sizes.replication_events:,}-event backlog",
            f"{replication['replication_catch_up_seconds']:.1f} s",
            f"{replication['replication_rows_per_second']:,.0f} rows/s applied",
        ),
        *_durability_figures(replication),
        Figure(
            "loader",
            f"rows/s, `cinema load --until-caught-up` ({loader['loader_rows']:,.0f} rows)",
            f"{loader['loader_rows_per_second']:,.0f}",
            f"in-engine INSERT ... SELECT FROM postgresql(): {loader['in_engine_rows_per_second']:,.0f}",
            f"{loader['loader_to_in_engine_ratio']:.2f} (goal >= 0.7)",
        ),
        Figure(
            "loader",
            "rows/s, the path not taken (Python COPY + clickhouse-connect)",
            f"{loader['python_path_rows_per_second']:,.0f}",
            f"in-engine: {loader['in_engine_rows_per_second']:,.0f}",
            f"{loader['python_path_to_in_engine_ratio']:.2f}",
        ),
        Figure(
            "freshness",
            f"publisher commit -> visible in ClickHouse, {LIVE_RATE:,.0f} events/s live",
            f"p50 {loader['freshness_p50_seconds']:.2f} s, p95 {loader['freshness_p95_seconds']:.2f} s, "
            f"p99 {loader['freshness_p99_seconds']:.2f} s",
            f"{loader['freshness_events']:,.0f} events, max {loader['freshness_max_seconds']:.2f} s",
            f"p95 goal <= 2 s: {'met' if loader['freshness_p95_seconds'] <= 2 else 'MISSED'}",
        ),
        Figure(
            "loader",
            "peak RSS",
            f"{loader['loader_drain_peak_rss_mb']:,.0f} MB draining",
            f"{loader['loader_follow_peak_rss_mb']:,.0f} MB as a service",
        ),
    ]
    short = f"_at_{SHORT_CADENCE_SECONDS:g}s_cadence"
    rows += [
        Figure(
            "live",
            f"publisher commit -> viewing_sessions, `cinema live` at {live['rate_events_per_second']:,.0f} events/s, "
            f"refresh every {live['cadence_seconds']:.0f} s (default)",
            f"p50 {live['mart_freshness_p50_seconds']:.1f} s, p95 {live['mart_freshness_p95_seconds']:.1f} s",
            f"{live['refreshes']:.0f} refreshes, {live['refresh_mean_seconds']:.1f} s each on average; "
            f"raw p99 {live['raw_freshness_p99_seconds']:.2f} s "
            f"({live['raw_freshness_p99_seconds_after_first_refresh']:.2f} s after the first refresh)",
            f"p95 goal <= 60 s: {'met' if live['mart_freshness_p95_seconds'] <= 60 else 'MISSED'}",
        ),
        Figure(
            "live",
            f"the same, refresh every {SHORT_CADENCE_SECONDS:g} s",
            f"p50 {live['mart_freshness_p50_seconds' + short]:.1f} s, "
            f"p95 {live['mart_freshness_p95_seconds' + short]:.1f} s",
            f"{live['refreshes' + short]:.0f} refreshes, {live['refresh_mean_seconds' + short]:.1f} s each on average; "
            f"raw p99 {live['raw_freshness_p99_seconds' + short]:.2f} s",
            f"p95 aim <= 15 s: {'met' if live['mart_freshness_p95_seconds' + short] <= 15 else 'missed'}",
        ),
        Figure(
            "capacity",
            f"highest offered rate with raw freshness p99 <= 1 s for {capacity['hold_seconds']:.0f} s",
            f"{capacity['sustained_events_per_second']:,.0f} events/s",
            f"replication apply: {capacity['replication_apply_rows_per_second']:,.0f} rows/s; "
            f"first failed: {capacity['lowest_failed_events_per_second']:,.0f} events/s"
            if capacity["lowest_failed_events_per_second"]
            else "every step held: the capacity is at least this",
            f"{capacity['capacity_to_replication_ratio']:.2f} (goal >= {CAPACITY_GOAL_RATIO})",
        ),
        *_cpu_figures(capacity),
    ]
    if "ingest_cores_at_goal_rate" in capacity:
        rows.append(
            Figure(
                "capacity",
                f"cores the producer and the publisher's backends alone would need at the goal's "
                f"{capacity['goal_events_per_second']:,.0f} events/s (their cores per event at the capacity)",
                f"{capacity['ingest_cores_at_goal_rate']:.2f} of {os.cpu_count()}",
            )
        )
    for events in sizes.dbt_events:
        label = dbt_label(events)
        full = dbt[f"dbt_build_seconds_{label}"]
        goal = f"goal <= 60 s: {'met' if full <= 60 else 'MISSED'}" if events == 10_000_000 else ""
        rows.append(
            Figure(
                "dbt",
                f"`dbt build`, {events:,} events, embedded ClickHouse",
                f"{full:.1f} s",
                f"incremental run after it: {dbt[f'dbt_incremental_build_seconds_{label}']:.1f} s",
                goal,
            )
        )
    return rows


def _runner(environment: dict[str, str], workdir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def cinema(*args: str, environment_overrides: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CINEMA, *args],
            env={**environment, **(environment_overrides or {})},
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"cinema {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return cinema


def _sections(sizes: Sizes) -> list[tuple[str, Callable[[Settings, Any], dict[str, float]]]]:
    from bench import dbt, live, loader, producer, replication

    return [
        ("producer", lambda settings, cinema: producer.run(settings, cinema, sizes.producer_events)),
        ("replication", lambda settings, cinema: replication.run(settings, cinema, sizes.replication_events)),
        (
            "loader",
            lambda settings, cinema: loader.run(
                settings, cinema, sizes.loader_events, live_rate=LIVE_RATE, live_seconds=sizes.live_seconds
            ),
        ),
        ("dbt", lambda settings, cinema: dbt.run(settings, cinema, sizes.dbt_events)),
        (
            "live",
            lambda settings, _cinema: live.live_figures(
                settings, LIVE_RATE, sizes.mart_live_seconds, SHORT_CADENCE_SECONDS, sizes.short_cadence_live_seconds
            ),
        ),
        (
            "capacity",
            lambda settings, _cinema: live.capacity(
                settings, sizes.capacity_rates, sizes.capacity_hold_seconds, sizes.capacity_bisections
            ),
        ),
    ]


def _with_capacity_ratio(figures: dict[str, dict[str, float]]) -> None:
    """The capacity beside replication's standalone apply rate from the same run, and
    what the goal's rate would cost this machine before replication or loading start:
    the producer's and the publisher's backends' cores per event at the capacity, times
    the goal's rate (both do the same work for every event, so their cores grow with the rate)."""
    capacity = figures["capacity"]
    apply_rate = figures["replication"]["replication_rows_per_second"]
    sustained = capacity["sustained_events_per_second"]
    capacity["replication_apply_rows_per_second"] = apply_rate
    capacity["capacity_to_replication_ratio"] = sustained / apply_rate
    goal_rate = CAPACITY_GOAL_RATIO * apply_rate
    capacity["goal_events_per_second"] = goal_rate
    if sustained:
        ingest_cores = capacity["cpu_cores_producer"] + capacity["cpu_cores_publisher_backends"]
        capacity["ingest_cores_at_goal_rate"] = ingest_cores / sustained * goal_rate


@click.command()
@click.option("--full", is_flag=True, help="The sizes the issues quote (1M events; takes much longer).")
@click.option("--output", type=click.Path(path_type=Path), default=Path("build/bench.json"), show_default=True)
def main(full: bool, output: Path) -> None:
    sizes = FULL if full else QUICK
    state_dir = sandbox.new_state_dir("cinema-bench-")
    environment = sandbox.environment(state_dir)
    workdir = state_dir / "work"
    workdir.mkdir()
    os.environ.update(environment)
    settings = load_settings(env_file=workdir / ".env")
    figures: dict[str, dict[str, float]] = {}
    began = time.monotonic()
    try:
        embedded.up(settings)
        cinema = _runner({**os.environ, **environment}, workdir)
        for name, measure in _sections(sizes):
            click.echo(f"bench: {name} ...", err=True)
            figures[name] = measure(settings, cinema)
    finally:
        embedded.down(settings, purge=True)
        shutil.rmtree(state_dir, ignore_errors=True)
    _with_capacity_ratio(figures)
    print_table(
        f"bench ({'full' if full else 'quick'} sizes, {os.cpu_count()} cores)",
        ("stage", "figure", "value", "reference (same run)", "ratio / goal"),
        [(f.stage, f.what, f.value, f.reference, f.ratio) for f in _figures(figures, sizes)],
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "sizes": sizes.__dict__,
                "seconds": round(time.monotonic() - began, 1),
                "figures": figures,
            },
            indent=2,
        )
    )
    click.echo(f"bench: wrote {output}", err=True)


if __name__ == "__main__":
    main()
