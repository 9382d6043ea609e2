"""dbt, run in this process: `cinema transform` builds the marts, `cinema dbt ...` is dbt.

The dbt project reads its connection from environment variables (profiles.yml uses
env_var() only); `prepare_dbt` exports them from the project's settings, so a value
in .env reaches dbt exactly as it reaches the rest of the code. With the embedded
warehouse it also installs the chdb bridge (cinema/dbt_chdb_bridge.py) first.

`cinema dbt` is a drop-in `dbt`: same arguments, same exit codes (0 success, 1 a
model or test failed, 2 dbt could not run), so it can serve as the dbt executable
of astronomer-cosmos or of anyone's muscle memory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime

import click

from cinema.paths import DBT_PROJECT
from cinema.settings import Settings

EXIT_SUCCESS, EXIT_FAILURE, EXIT_ERROR = 0, 1, 2
# The loader's tables the project's sources read (models/staging/_staging__sources.yml).
RAW_TABLES = ("movies", "users", "viewing_events")


def dbt_environment(settings: Settings) -> dict[str, str]:
    """What profiles.yml and the sources read through env_var()."""
    return {
        "CLICKHOUSE_INTERFACE": settings.warehouse.interface,
        "CLICKHOUSE_DB": settings.warehouse.raw_database,
        "CLICKHOUSE_HOST": settings.warehouse.host,
        "CLICKHOUSE_PORT": str(settings.warehouse.port),
        "CLICKHOUSE_DBT_USER": settings.dbt.clickhouse_user,
        "CLICKHOUSE_DBT_PASSWORD": settings.dbt.clickhouse_password,
        "CLICKHOUSE_CLUSTER": settings.warehouse.cluster,
    }


def prepare_dbt(settings: Settings) -> None:
    """Ready this process for dbt: its environment, its project, the chdb bridge."""
    from cinema.dbt_chdb_bridge import install_if_embedded

    os.environ.update(dbt_environment(settings))
    # dbt's own variables; an explicit --project-dir or --profiles-dir still wins.
    os.environ.setdefault("DBT_PROJECT_DIR", str(DBT_PROJECT))
    os.environ.setdefault("DBT_PROFILES_DIR", str(DBT_PROJECT))
    install_if_embedded(settings)


def missing_raw_tables(settings: Settings) -> list[str]:
    """Source tables the loader has not created yet, as dbt's user sees them."""
    from cinema.warehouse import warehouse_client

    database = settings.warehouse.raw_database
    with warehouse_client(
        settings, user=settings.dbt.clickhouse_user, password=settings.dbt.clickhouse_password
    ) as client:
        present = client.query(
            "SELECT name FROM system.tables WHERE database = {database:String}", parameters={"database": database}
        ).result_columns
    names = set(present[0]) if present else set()
    return [f"{database}.{table}" for table in RAW_TABLES if table not in names]


def run_dbt(settings: Settings, args: Sequence[str]) -> int:
    """Run one dbt command in this process and return dbt's CLI exit code."""
    from dbt.cli.exceptions import DbtInternalException, DbtUsageException
    from dbt.cli.main import dbtRunner

    prepare_dbt(settings)
    result = dbtRunner().invoke(list(args))
    if result.success:
        return EXIT_SUCCESS
    if result.exception is None:
        return EXIT_FAILURE
    if isinstance(result.exception, DbtUsageException | DbtInternalException):
        # dbt's CLI prints these itself; the runner only returns them.
        click.echo(f"Error: {result.exception}", err=True)
    return EXIT_ERROR


@click.command("transform")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@click.option("--select", "selection", default=None, help="dbt node selection, e.g. `+viewing_sessions`.")
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="UTC moment sessions are judged at (in progress or abandoned), e.g. the data interval's end; "
    "default: the load time.",
)
def transform(full_refresh: bool, selection: str | None, as_of: datetime | None) -> None:
    """Build and test the marts: `dbt build` against the configured target."""
    from cinema.context import settings_from_context

    settings = settings_from_context()
    missing = missing_raw_tables(settings)
    if missing:
        raise click.ClickException(
            f"nothing to transform, the raw tables are missing: {', '.join(missing)}. "
            "Load the warehouse first: `cinema load --until-caught-up`."
        )
    args = [
        "build",
        *(["--full-refresh"] if full_refresh else []),
        *(["--select", selection] if selection else []),
        *(["--vars", json.dumps({"as_of": f"{as_of:%Y-%m-%d %H:%M:%S}"})] if as_of else []),
    ]
    sys.exit(run_dbt(settings, args))


@click.command(
    "dbt",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
)
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
def dbt(dbt_args: tuple[str, ...]) -> None:
    """Any dbt command against the configured target, e.g. `cinema dbt docs generate`."""
    from cinema.context import settings_from_context

    sys.exit(run_dbt(settings_from_context(), dbt_args))
