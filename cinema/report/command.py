"""`cinema report`: read the marts, render the page, write it whole."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click
from clickhouse_connect.driver.exceptions import ClickHouseError

from cinema.report.marts import NoMarts, open_marts, read_marts
from cinema.report.page import render
from cinema.settings import Settings
from cinema.warehouse import WarehouseBusy


def default_output(settings: Settings) -> Path:
    return settings.state_dir / "report" / "index.html"


def write_report(settings: Settings, output: Path) -> Path:
    client = open_marts(settings)
    try:
        marts = read_marts(client)
    finally:
        client.close()
    page = render(marts, datetime.now(UTC))
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a reader never sees half a page.
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, output)
    return output


@click.command("report")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the page.  [default: <state dir>/report/index.html]",
)
def report(output: Path | None) -> None:
    """Write the marts as one self-contained HTML page (offline, no scripts) and print its path."""
    from cinema.context import settings_from_context

    settings = settings_from_context()
    try:
        written = write_report(settings, output or default_output(settings))
    except (NoMarts, WarehouseBusy) as error:
        raise click.ClickException(str(error)) from error
    except ClickHouseError as error:
        raise click.ClickException(f"could not read the marts: {error}") from error
    click.echo(str(written))
