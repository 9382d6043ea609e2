"""Replication catch-up: apply throughput of a backlog, with the subscription paused
while the producer writes and resumed with the clock running."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from cinema import db
from cinema.names import SUBSCRIPTION
from cinema.replication import publisher_lsn, wait_for_subscriber
from cinema.settings import Settings


def _subscription(settings: Settings, enabled: bool) -> None:
    db.run_as_admin(settings, "subscriber", f"ALTER SUBSCRIPTION {SUBSCRIPTION} {'ENABLE' if enabled else 'DISABLE'}")


def run(settings: Settings, cinema: Callable[..., subprocess.CompletedProcess[str]], events: int) -> dict[str, float]:
    wait_for_subscriber(settings, timeout_seconds=600)
    _subscription(settings, enabled=False)
    try:
        cinema("generate", "--events", str(events), "--seed", "515151", "--writers", "4")
        target = publisher_lsn(settings)
    finally:
        _subscription(settings, enabled=True)
    began = time.monotonic()
    wait_for_subscriber(settings, timeout_seconds=1800, target_lsn=target)
    seconds = time.monotonic() - began
    return {"replication_catch_up_seconds": seconds, "replication_rows_per_second": events / seconds}
