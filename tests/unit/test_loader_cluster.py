"""The raw schema, the loader's recovery and dbt's profile with and without a ClickHouse cluster.

No server: the statements are compared with the single-server ones they must equal, and
ClickHouse's own parser (chdb) reads every one. docker-compose.scale.yaml runs them on a
real cluster; tests/unit/test_compose_scale.py checks that cluster's configuration.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cinema import sandbox
from cinema.names import BATCHES_TABLE, QUARANTINE_TABLE
from cinema.paths import DBT_PROJECT, PROJECT_ROOT
from cinema.settings import load_settings
from cinema.transform import dbt_environment
from loader import raw
from loader.schema import (
    RAW_TABLES,
    VIEWING_EVENTS,
    raw_schema_ddl,
    upgrade_ddl,
)
from tests.unit.clickhouse_parser import clickhouse_errors, syntax_errors

CLUSTER = "cinema"
# What `ensure_raw_schema` ran before clusters existed, statement by statement.
SINGLE_SERVER_SCHEMA = (PROJECT_ROOT / "tests" / "unit" / "contracts" / "raw_schema_single_server.sql").read_text()
CREATED = re.compile(r"^CREATE (?:TABLE|DATABASE) IF NOT EXISTS (\S+)", flags=re.MULTILINE)


def statements(ddl: tuple[str, ...]) -> str:
    return ";\n\n".join(ddl) + ";\n"


def created(ddl: tuple[str, ...]) -> list[str]:
    return [match for statement in ddl for match in CREATED.findall(statement)]


def by_table(ddl: tuple[str, ...]) -> dict[str, str]:
    return {CREATED.findall(statement)[0]: statement for statement in ddl[1:]}


def elements(statement: str) -> list[str]:
    """The column and index lines of a CREATE TABLE."""
    return statement.split(" (\n", 1)[1].split("\n)\n", 1)[0].split(",\n")


# ---------------------------------------------------------------------------- schema


def test_without_a_cluster_the_schema_is_the_single_server_one_byte_for_byte():
    assert statements(raw_schema_ddl("cinema_raw")) == SINGLE_SERVER_SCHEMA
    assert statements(raw_schema_ddl("cinema_raw", "")) == SINGLE_SERVER_SCHEMA


def test_on_a_cluster_every_statement_runs_on_every_node_and_the_tables_keep_their_names():
    ddl = raw_schema_ddl("cinema_raw", CLUSTER)

    assert all(" ON CLUSTER 'cinema'" in statement.splitlines()[0] for statement in ddl)
    assert created(ddl) == [
        "`cinema_raw`",
        "`cinema_raw`.`users`",
        "`cinema_raw`.`movies`",
        "`cinema_raw`.`viewing_events_local`",
        "`cinema_raw`.`viewing_events`",
        "`cinema_raw`.`_loader_batches`",
        "`cinema_raw`.`_quarantine`",
        "`cinema_raw`.`_loader_epochs`",
    ]


def test_on_a_cluster_events_are_sharded_by_session_behind_a_distributed_table():
    tables = by_table(raw_schema_ddl("cinema_raw", CLUSTER))
    local = tables["`cinema_raw`.`viewing_events_local`"]
    distributed = tables["`cinema_raw`.`viewing_events`"]

    assert local.endswith(
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')\n"
        "PARTITION BY toYYYYMM(event_time)\nORDER BY (session_id, event_time, id)"
    )
    # The loader and dbt read and write `viewing_events`, as on one server; the local
    # table is created first, on every node, because the Distributed one copies its columns.
    assert distributed == (
        "CREATE TABLE IF NOT EXISTS `cinema_raw`.`viewing_events` ON CLUSTER 'cinema' "
        "AS `cinema_raw`.`viewing_events_local`\n"
        "ENGINE = Distributed('cinema', 'cinema_raw', 'viewing_events_local', cityHash64(session_id))"
    )
    assert [table.name for table in RAW_TABLES if table.sharding_key] == [VIEWING_EVENTS.name]


def test_on_a_cluster_reference_and_bookkeeping_tables_have_every_node_as_a_replica():
    tables = by_table(raw_schema_ddl("cinema_raw", CLUSTER))
    every_node = "'/clickhouse/tables/all/{database}/{table}', '{replica}'"

    for name in ("users", "movies"):
        assert (
            f"ENGINE = ReplicatedReplacingMergeTree({every_node}, _xid)\nORDER BY " in tables[f"`cinema_raw`.`{name}`"]
        )
    for name in (BATCHES_TABLE, QUARANTINE_TABLE):
        assert f"ENGINE = ReplicatedMergeTree({every_node})\nORDER BY " in tables[f"`cinema_raw`.`{name}`"]
    assert not any("Distributed" in statement for name, statement in tables.items() if "viewing_events" not in name)


def test_a_cluster_changes_engines_only_never_columns_codecs_or_indices():
    single = by_table(raw_schema_ddl("cinema_raw"))
    cluster = by_table(raw_schema_ddl("cinema_raw", CLUSTER))

    renamed = {"`cinema_raw`.`viewing_events`": "`cinema_raw`.`viewing_events_local`"}
    for name, statement in single.items():
        assert elements(cluster[renamed.get(name, name)]) == elements(statement), name
        clauses = statement.split("\nENGINE = ", 1)[1].split("\n", 1)[1]
        assert cluster[renamed.get(name, name)].endswith("\n" + clauses), name


# ---------------------------------------------------------------------------- recovery


def test_recovery_deletes_through_the_shards_local_tables_on_a_cluster():
    assert raw.delete_statement("cinema_raw", "viewing_events", 42) == (
        "DELETE FROM `cinema_raw`.`viewing_events` WHERE _xid >= 42"
    )
    # A DELETE cannot go through a Distributed table: each shard's local table, on every node.
    assert raw.delete_statement("cinema_raw", "viewing_events", 42, CLUSTER) == (
        "DELETE FROM `cinema_raw`.`viewing_events_local` ON CLUSTER 'cinema' WHERE _xid >= 42"
    )
    # A table on every node is one replicated table: its DELETE reaches all replicas.
    for table in ("users", "movies", QUARANTINE_TABLE):
        assert raw.delete_statement("cinema_raw", table, 42, CLUSTER) == (
            f"DELETE FROM `cinema_raw`.`{table}` WHERE _xid >= 42"
        )


def test_recovery_stops_the_loaders_statements_on_every_node_of_a_cluster():
    assert raw.kill_statement("cinema_raw") == (
        r"KILL QUERY WHERE match(query_id, '^cinema\\-loader\\-cinema_raw\\-[0-9a-f]{12}-') SYNC"
    )
    assert raw.kill_statement("cinema_raw", CLUSTER).startswith(
        "KILL QUERY ON CLUSTER 'cinema' WHERE match(initial_query_id, "
    )


def test_recovery_stops_only_the_statements_of_its_own_raw_database():
    own = raw._write_id(raw.Fence("cinema_raw", 1), "viewing_events-1-2")
    other = raw._write_id(raw.Fence("cinema_raw-2", 1), "viewing_events-1-2")
    pattern = raw.query_id_pattern("cinema_raw")
    query = f"SELECT match('{own}', '{pattern}') AND NOT match('{other}', '{pattern}') AS ok, throwIf(NOT ok)"
    assert own.startswith("cinema-loader-cinema_raw-")
    assert clickhouse_errors([query.replace("\\", "\\\\")]) == {}


def test_one_loader_per_raw_database_holds_across_a_clusters_nodes():
    # Each node has its own database UUID; the lock is named after what they share. (No
    # client is asked on a cluster.)
    assert raw.lock_identity(None, "cinema_raw", CLUSTER) == "cinema-loader/cinema/cinema_raw"


def test_clickhouse_parses_every_schema_and_recovery_statement():
    tables = [table.name for table in RAW_TABLES] + [QUARANTINE_TABLE]
    every = [
        *raw_schema_ddl("cinema_raw"),
        *raw_schema_ddl("cinema_raw", CLUSTER),
        *(raw.delete_statement("cinema_raw", table, 7, cluster) for table in tables for cluster in ("", CLUSTER)),
        raw.kill_statement("cinema_raw"),
        raw.kill_statement("cinema_raw", CLUSTER),
        *upgrade_ddl("cinema_raw"),
        *upgrade_ddl("cinema_raw", CLUSTER),
    ]
    broken = "CREATE TABLE t ON CLUSTER 'c' (a Int32 ENGINE = MergeTree ORDER BY a"

    errors = syntax_errors([*every, broken])

    assert list(errors) == [broken], errors
    assert "Syntax error" in errors[broken]


def test_the_loaders_cluster_settings_are_ones_clickhouse_accepts():
    def query(settings: dict[str, object]) -> str:
        values = ", ".join(f"{name} = {value!r}" for name, value in settings.items())
        return f"SELECT 1 SETTINGS {values}"

    accepted = query(raw.CLUSTER_CLIENT_SETTINGS)
    misspelt = query({"distributed_foreground_inserts": 1})

    assert list(clickhouse_errors([accepted, misspelt])) == [misspelt]
    assert raw.CLUSTER_CLIENT_SETTINGS["distributed_foreground_insert"] == 1


# ---------------------------------------------------------------------------- settings, dbt


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in sandbox.environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CLICKHOUSE_CLUSTER", raising=False)
    return tmp_path / "no.env"


def test_the_cluster_setting_is_optional_and_reaches_dbt(environment: Path, monkeypatch: pytest.MonkeyPatch):
    single = load_settings(environment)
    monkeypatch.setenv("CLICKHOUSE_CLUSTER", CLUSTER)
    cluster = load_settings(environment)

    assert single.warehouse.cluster == ""
    assert dbt_environment(single)["CLICKHOUSE_CLUSTER"] == ""
    assert cluster.warehouse.cluster == CLUSTER
    assert dbt_environment(cluster)["CLICKHOUSE_CLUSTER"] == CLUSTER


RENDER_PROFILE = """\
import json, os
from argparse import Namespace
from dbt.flags import set_from_args
from dbt_common.context import set_invocation_context
from dbt.config.profile import Profile, read_profile
from dbt.config.renderer import ProfileRenderer
from dbt.adapters.factory import load_plugin
from dbt.adapters.clickhouse.relation import ClickHouseRelation

set_from_args(Namespace(PROFILES_DIR=os.environ["DBT_PROFILES_DIR"]), None)
set_invocation_context(os.environ)
load_plugin("clickhouse")
profile = Profile.from_raw_profiles(read_profile(os.environ["DBT_PROFILES_DIR"]), "cinema", ProfileRenderer({}))
credentials = profile.credentials
on_cluster = ClickHouseRelation.get_on_cluster(credentials.cluster or "", credentials.database_engine)
print(json.dumps({"cluster": credentials.cluster, "on_cluster": on_cluster}))
"""


@pytest.mark.parametrize(("cluster", "on_cluster"), [("", False), (CLUSTER, True)])
def test_dbt_clickhouse_creates_on_the_cluster_only_when_one_is_set(cluster: str, on_cluster: bool):
    """profiles.yml as dbt-clickhouse reads it (a child process: dbt's flags are process-wide)."""
    environment = {
        **os.environ,
        "CLICKHOUSE_INTERFACE": "http",
        "CLICKHOUSE_CLUSTER": cluster,
        "DBT_PROFILES_DIR": str(DBT_PROJECT),
    }

    result = subprocess.run(
        [sys.executable, "-c", RENDER_PROFILE],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"cluster": cluster, "on_cluster": on_cluster}
