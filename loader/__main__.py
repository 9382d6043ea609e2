"""`cinema load`: the loader as a service, as a one-shot drain, or as its own health probe."""

from __future__ import annotations

import signal
import sys
import threading

import click

from cinema.replication import ReplicationTimeout, SubscriptionMissing
from cinema.warehouse import WarehouseBusy


def _stop_on_signals() -> threading.Event:
    """SIGTERM (docker stop) and SIGINT end the loop after the current batch."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        click.echo(f"{signal.Signals(signum).name}: finishing the current batch", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


@click.command(
    "load",
    epilog="Examples: cinema load --until-caught-up;  cinema load --follow;  cinema load --check-health",
)
@click.option(
    "--follow", "mode", flag_value="follow", help="Run as a service: load rows as they commit, until SIGTERM."
)
@click.option(
    "--until-caught-up",
    "mode",
    flag_value="drain",
    help="Load everything committed so far, then exit 0 (waits for a running loader service instead, if configured).",
)
@click.option(
    "--check-health",
    "mode",
    flag_value="health",
    help="Ask the running service's /healthz; exit 0 if healthy (a container healthcheck).",
)
@click.option(
    "--wait-for-publisher/--no-wait-for-publisher",
    default=True,
    show_default=True,
    help="--until-caught-up: first wait until the subscriber has what the publisher committed.",
)
def load(mode: str | None, wait_for_publisher: bool) -> None:
    """Move new subscriber rows into ClickHouse's raw database, exactly once."""
    from cinema.context import settings_from_context
    from loader.metrics import probe
    from loader.service import LoaderError, drain, follow

    if mode is None:
        raise click.UsageError("choose one of --follow, --until-caught-up or --check-health")
    settings = settings_from_context()
    if mode == "health":
        healthy, report = probe(settings)
        click.echo(report)
        sys.exit(0 if healthy else 1)
    stop = _stop_on_signals()
    try:
        if mode == "follow":
            summary = follow(settings, stop)
        else:
            summary = drain(settings, stop=stop, wait_for_publisher=wait_for_publisher)
    except (LoaderError, WarehouseBusy, ReplicationTimeout, SubscriptionMissing) as error:
        raise click.ClickException(str(error)) from error
    click.echo(summary.describe())
    if mode == "drain" and not summary.caught_up:
        raise click.ClickException("stopped before everything committed was loaded")


if __name__ == "__main__":
    load()
