"""`cinema`: the single entry point for the Makefile, Airflow tasks and containers.

Commands import their modules lazily so `cinema --help` stays instant and a
command never pays for another's dependencies (Airflow, dbt, chdb).

A failure prints one line, its cause and the fix, and exits 1; `--debug` (or
CINEMA_DEBUG=1) shows the traceback instead. Everything a command writes is private
to its user (umask 077): the state folder holds passwords and viewing data.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from collections import defaultdict
from pathlib import Path

import click
import psycopg2

from cinema.context import settings_from_context
from cinema.settings import Settings

# Commands that live next to their code, imported only when invoked.
LAZY_COMMANDS = {
    "generate": "producer.generate_events:generate",
    "load": "loader.__main__:load",
    "transform": "cinema.transform:transform",
    "dbt": "cinema.transform:dbt",
    "metabase": "metabase.provision:metabase",
    "report": "cinema.report.command:report",
    "check": "cinema.reconcile:check",
    "demo": "cinema.orchestrate:demo",
    "airflow": "cinema.orchestrate:airflow",
    "live": "cinema.live:live",
}


# Failures whose message already says what happened and what to do: (module, class).
# Looked up only if the module was imported, so none is imported for this.
SELF_EXPLAINING = (
    ("cinema.stack", "StackError"),
    ("cinema.warehouse", "WarehouseBusy"),
    ("cinema.replication", "ReplicationTimeout"),
    ("cinema.replication", "SubscriptionMissing"),
    ("cinema.report.marts", "NoMarts"),
    ("loader.service", "LoaderError"),
    ("cinema.orchestrate", "StageFailed"),
)
UNREACHABLE = re.compile(r"connection refused|could not connect|no such file or directory|timeout expired", re.I)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _server_named(error: psycopg2.OperationalError, settings: Settings | None) -> str:
    found = re.search(r'server at "([^"]+)", port (\d+)', str(error))
    if found is None:
        return "PostgreSQL"
    address = f"{found.group(1)}:{found.group(2)}"
    if settings is not None:
        for server in (settings.publisher, settings.subscriber):
            if server.port == int(found.group(2)):
                return f"the {server.name} at {address}"
    return f"PostgreSQL at {address}"


def describe_failure(error: BaseException, settings: Settings | None) -> str:
    """One line: what failed and what to do about it."""
    if isinstance(error, click.ClickException):
        return error.format_message()
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if isinstance(error, psycopg2.OperationalError):
        server = _server_named(error, settings)
        if UNREACHABLE.search(str(error)):
            return f"cannot reach {server} (the stack is not running?): start it with `cinema stack up`"
        reason = first_line.split("failed: ", 1)[-1]
        return f"{server} refused the connection: {reason}"
    for module, name in SELF_EXPLAINING:
        known = getattr(sys.modules.get(module), name, None)
        if isinstance(known, type) and isinstance(error, known):
            return _one_line(str(error))
    return f"unexpected {type(error).__name__}: {first_line} (run again with --debug for the traceback)"


def _refuse_alternatives_together(ctx: click.Context, command: click.Command, args: list[str]) -> None:
    """Flags that set the same option (`--follow` / `--until-caught-up`) are alternatives:
    click would silently keep the last one given."""
    alternatives: dict[str, list[click.Option]] = defaultdict(list)
    for param in command.params:
        if isinstance(param, click.Option) and param.is_flag and not param.is_bool_flag and param.name:
            alternatives[param.name].append(param)
    given = args[: args.index("--")] if "--" in args else args
    for options in alternatives.values():
        used = [option.opts[0] for option in options if any(flag in given for flag in option.opts)]
        if len(used) > 1:
            usage = click.Context(command, info_name=command.name, parent=ctx)
            raise click.UsageError(f"{' and '.join(used)} cannot be used together: choose one", usage)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            _refuse_alternatives_together(ctx, command, rest)
        return name, command, rest

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as error:
            if ctx.params.get("debug") and error.__cause__ is not None:
                traceback.print_exception(error.__cause__)
            if type(error) is click.ClickException and "\n" in error.message:
                raise click.ClickException(_one_line(error.message)) from error.__cause__
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            settings = ctx.find_root().obj
            raise click.ClickException(
                describe_failure(error, settings if isinstance(settings, Settings) else None)
            ) from error

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug", is_flag=True, envvar="CINEMA_DEBUG", help="Show the traceback of a failure (also CINEMA_DEBUG=1)."
)
def main(debug: bool) -> None:
    """Home-cinema viewing analytics: PostgreSQL -> ClickHouse -> dbt marts."""
    os.umask(0o077)


@main.group()
def env() -> None:
    """The .env file."""


@env.command("init")
def env_init() -> None:
    """Create .env from .env_template (or add keys it gained), generating secrets."""
    from cinema.envfile import write_env

    click.echo(write_env(Path(".env_template"), Path(".env")).describe())


@main.group()
def stack() -> None:
    """The embedded stack: two PostgreSQL 18 servers with logical replication."""


@stack.command("up")
def stack_up() -> None:
    """Initialise, start and configure both servers and the subscription (idempotent)."""
    from cinema import stack as embedded

    settings = settings_from_context()
    embedded.up(settings)
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
    from cinema.status import status

    report = status(settings_from_context())
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
