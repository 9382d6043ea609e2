"""`cinema dbt` / `cinema transform`: settings reach dbt, arguments and exit codes pass through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cinema import sandbox
from cinema.cli import main
from cinema.paths import DBT_PROJECT
from cinema.settings import load_settings
from cinema.transform import dbt_environment

# What `cinema dbt` exports into its own process; the tests put every one back.
EXPORTED = (
    "CLICKHOUSE_INTERFACE",
    "CLICKHOUSE_HOST",
    "CLICKHOUSE_PORT",
    "CLICKHOUSE_DBT_USER",
    "CLICKHOUSE_DBT_PASSWORD",
    "CLICKHOUSE_CLUSTER",
    "DBT_PROJECT_DIR",
    "DBT_PROFILES_DIR",
)


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A hermetic configuration; every variable dbt's preparation exports is restored afterwards."""
    values = {**sandbox.environment(tmp_path), "CLICKHOUSE_DB": "raw_for_dbt"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in EXPORTED:
        # Recorded first, so that teardown removes what the command under test adds.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    monkeypatch.chdir(tmp_path)
    return values


def cinema(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_dbt_gets_the_warehouse_and_user_from_the_settings(environment: dict[str, str]) -> None:
    os.environ["CLICKHOUSE_INTERFACE"] = "http"
    os.environ["CLICKHOUSE_HOST"] = "clickhouse.example"
    os.environ["CLICKHOUSE_DBT_PASSWORD"] = "dbt-secret"  # noqa: S105
    exported = dbt_environment(load_settings())
    assert exported["CLICKHOUSE_INTERFACE"] == "http"
    assert exported["CLICKHOUSE_HOST"] == "clickhouse.example"
    assert exported["CLICKHOUSE_DB"] == "raw_for_dbt"
    assert exported["CLICKHOUSE_DBT_USER"] == "cinema_dbt"
    assert exported["CLICKHOUSE_DBT_PASSWORD"] == "dbt-secret"  # noqa: S105


def test_cinema_dbt_passes_dbts_own_options_and_help_through(environment: dict[str, str]) -> None:
    version = cinema("dbt", "--version")
    assert version.exit_code == 0
    assert "Core" in version.output
    helped = cinema("dbt", "--help")
    assert helped.exit_code == 0
    assert "docs" in helped.output and "build" in helped.output


def test_cinema_dbt_keeps_dbts_exit_code_for_unusable_arguments(environment: dict[str, str]) -> None:
    result = cinema("dbt", "build", "--no-such-flag")
    assert result.exit_code == 2
    assert "no-such-flag" in result.output


def test_cinema_dbt_runs_the_project_of_this_checkout(environment: dict[str, str]) -> None:
    listed = cinema("dbt", "ls", "--resource-type", "seed", "--output", "name")
    assert listed.exit_code == 0, listed.output
    assert {"country_regions", "device_categories"} <= set(listed.output.split())
    assert os.environ["DBT_PROJECT_DIR"] == str(DBT_PROJECT)


def test_transform_on_an_empty_warehouse_names_what_is_missing(environment: dict[str, str]) -> None:
    result = cinema("transform")
    assert result.exit_code == 1
    assert "raw_for_dbt.viewing_events" in result.output
    assert "cinema load --until-caught-up" in result.output
