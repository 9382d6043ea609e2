"""Replication catch-up: apply throughput of a backlog, with the subscription paused
while the producer writes and resumed with the clock running.

Measured with the subscription's `synchronous_commit` off (PostgreSQL's default for
subscriptions, and the chosen setting: the loader cuts only at a flushed xmin instead)
and on (every applied transaction flushed before the next), alternately in the same run,
for large (5,000-row) and small (50-row, a live stream's size) transactions. For the
chosen setting and large transactions, the cores each part kept busy while applying are
read as the capacity steps read them (bench/cpu.py), so the two compare.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from bench import cpu
from cinema import db
from cinema.names import SUBSCRIPTION
from cinema.replication import publisher_lsn, wait_for_subscriber
from cinema.settings import Settings

CHOSEN = "off"
SETTINGS = ("off", "on")
LARGE, SMALL = 5_000, 50


def _subscription(settings: Settings, clause: str) -> None:
    db.run_as_admin(settings, "subscriber", f"ALTER SUBSCRIPTION {SUBSCRIPTION} {clause}")


def _catch_up_seconds(
    settings: Settings,
    cinema: Callable[..., subprocess.CompletedProcess[str]],
    events: int,
    seed: int,
    chunk_size: int,
    synchronous_commit: str,
) -> tuple[float, dict[str, float]]:
    """Seconds to apply the backlog, and the cores each part kept busy meanwhile."""
    wait_for_subscriber(settings, timeout_seconds=600)
    _subscription(settings, f"SET (synchronous_commit = {synchronous_commit})")
    _subscription(settings, "DISABLE")
    try:
        cinema(
            "generate", "--events", str(events), "--seed", str(seed), "--writers", "4", "--chunk-size", str(chunk_size)
        )
        target = publisher_lsn(settings)
    finally:
        _subscription(settings, "ENABLE")
    began = time.monotonic()
    # Read as the capacity steps read it (bench/cpu.py): the apply worker restarts with ENABLE.
    first = cpu.sample(lambda: cpu.stack_processes(settings, {}))
    wait_for_subscriber(settings, timeout_seconds=1800, target_lsn=target)
    return time.monotonic() - began, cpu.cores(first, cpu.sample(lambda: cpu.stack_processes(settings, {})))


def run(settings: Settings, cinema: Callable[..., subprocess.CompletedProcess[str]], events: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    seed = 515151
    try:
        for chunk_size, count in ((LARGE, events), (SMALL, max(1_000, events // 10))):
            for synchronous_commit in SETTINGS:
                seed += 1
                seconds, cores = _catch_up_seconds(settings, cinema, count, seed, chunk_size, synchronous_commit)
                figures[f"replication_rows_per_second_{chunk_size}_row_transactions_sync_{synchronous_commit}"] = (
                    count / seconds
                )
                if chunk_size == LARGE and synchronous_commit == CHOSEN:
                    figures["replication_catch_up_seconds"] = seconds
                    figures |= {f"replication_cpu_cores_{component}": value for component, value in cores.items()}
    finally:
        _subscription(settings, f"SET (synchronous_commit = {CHOSEN})")
    figures["replication_rows_per_second"] = figures[
        f"replication_rows_per_second_{LARGE}_row_transactions_sync_{CHOSEN}"
    ]
    return figures
