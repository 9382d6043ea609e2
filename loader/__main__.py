"""`cinema load`: the loader as a service, as a one-shot drain, or as its own health probe."""

from __future__ import annotations

import sys

import click

from cinema.replication import ReplicationTimeout, SubscriptionMissing
from cinema.signals import stop_on_signals
from cinema.warehouse import WarehouseBusy


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
    "--resync",
    "mode",
    flag_value="resync",
    help="Re-baseline after a deliberate resync of the subscriber: the next load re-loads it by event id, "
    "skipping what is loaded.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="--until-caught-up: give up after this many seconds, naming what holds loading back.",
)
@click.option(
    "--wait-for-publisher/--no-wait-for-publisher",
    default=True,
    show_default=True,
    help="--until-caught-up: first wait until the subscriber has what the publisher committed.",
)
def load(mode: str | None, timeout: float, wait_for_publisher: bool) -> None:
    """Move new subscriber rows into ClickHouse's raw database, exactly once."""
    from cinema.context import settings_from_context
    from loader.metrics import probe
    from loader.service import LoaderError, drain, follow, resync

    if mode is None:
        raise click.UsageError("choose one of --follow, --until-caught-up, --check-health or --resync")
    settings = settings_from_context()
    if mode == "health":
        healthy, report = probe(settings)
        click.echo(report)
        sys.exit(0 if healthy else 1)
    try:
        with stop_on_signals("finishing the current batch") as stop:
            if mode == "follow":
                summary = follow(settings, stop)
            elif mode == "resync":
                summary = resync(settings)
                click.echo(
                    f"re-baselined {settings.warehouse.raw_database} on the subscriber as it is now: the next load "
                    f"re-loads from transaction {summary.watermark} by event id, skipping what is loaded"
                )
                return
            else:
                summary = drain(settings, stop=stop, wait_for_publisher=wait_for_publisher, timeout_seconds=timeout)
    except (LoaderError, WarehouseBusy, ReplicationTimeout, SubscriptionMissing) as error:
        raise click.ClickException(str(error)) from error
    click.echo(summary.describe())
    if mode == "drain" and not summary.caught_up:
        raise click.ClickException("stopped before everything committed was loaded")


if __name__ == "__main__":
    load()
