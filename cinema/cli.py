"""`cinema`: the single entry point for the Makefile, Airflow tasks and containers.

Commands import their modules lazily so `cinema --help` stays instant and a
command never pays for another's dependencies (Airflow, dbt, chdb).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click
from decouple import UndefinedValueError

from cinema.logs import configure_logging
from cinema.settings import Settings, load_settings

# Commands that live next to their code, imported only when invoked.
LAZY_COMMANDS = {
    "generate": "producer.generate_events:generate",
    "load": "loader.__main__:load",
    "transform": "cinema.transform:transform",
    "dbt": "cinema.transform:dbt",
    "metabase": "metabase.provision:metabase",
    "report": "cinema.report:report",
    "check": "cinema.reconcile:check",
    "demo": "cinema.orchestrate:demo",
    "airflow": "cinema.orchestrate:airflow",
    "live": "cinema.live:live",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, cmd_name)


def settings_from_context() -> Settings:
    """Load settings once per invocation and configure logging with them."""
    context = click.get_current_context()
    root = context.find_root()
    if root.obj is None:
        try:
            root.obj = load_settings()
        except UndefinedValueError as error:
            raise click.ClickException(
                f"{error} Run `make .env` (creates .env with fresh secrets) or export it."
            ) from error
        except ValueError as error:
            raise click.ClickException(str(error)) from error
        configure_logging(root.obj.log_format)
    settings: Settings = root.obj
    return settings


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Home-cinema viewing analytics: PostgreSQL -> ClickHouse -> dbt marts."""


@main.group()
def env() -> None:
    """The .env file."""


@env.command("init")
def env_init() -> None:
    """Create .env from .env_template (or add keys it gained), generating secrets."""
    from cinema.envfile import write_env

    added = write_env(Path(".env_template"), Path(".env"))
    click.echo(f".env: {len(added)} setting(s) added" if added else ".env: up to date")


@main.group()
def stack() -> None:
    """The embedded stack: two PostgreSQL 18 servers with logical replication."""


@stack.command("up")
def stack_up() -> None:
    """Initialise, start and configure both servers and the subscription (idempotent)."""
    from cinema import stack as embedded

    settings = settings_from_context()
    try:
        embedded.up(settings)
    except embedded.StackError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"publisher  127.0.0.1:{settings.publisher.port}  subscriber 127.0.0.1:{settings.subscriber.port}  "
        f"state {settings.state_dir}"
    )


@stack.command("down")
@click.option("--purge", is_flag=True, help="Also delete the state folder: databases, warehouse, reports.")
def stack_down(purge: bool) -> None:
    """Stop the servers this stack started."""
    from cinema import stack as embedded

    stopped = embedded.down(settings_from_context(), purge=purge)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}" + ("; state purged" if purge else ""))


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stack_status(as_json: bool) -> None:
    """Both servers, their event counts, the subscription and replication lag."""
    from cinema import stack as embedded

    report = embedded.status(settings_from_context())
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    from cinema.console import print_status

    print_status(report)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ingest(path: Path) -> None:
    """Validate a JSON-lines file of events and write it to the publisher, all or nothing."""
    from producer.ingest import InvalidEvents, ingest_file

    try:
        written = ingest_file(settings_from_context(), path)
    except InvalidEvents as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{written} event(s) written")


if __name__ == "__main__":
    main()
