"""The temporary bridge: dbt-clickhouse's `driver: chdb` served by the embedded warehouse."""

from __future__ import annotations

import fcntl
import os
from dataclasses import replace
from pathlib import Path

import pytest
from dbt.adapters.clickhouse import connections
from dbt.adapters.clickhouse.credentials import ClickHouseCredentials
from dbt.adapters.exceptions import FailedToConnectError

from cinema import dbt_chdb_bridge, sandbox, warehouse
from cinema.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in sandbox.environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    # Whatever a test installs is undone: dbt-clickhouse gets its own function back.
    monkeypatch.setattr(connections, "get_db_client", connections.get_db_client)
    return load_settings()


def lock_is_free(settings: Settings) -> bool:
    """Whether another open file (as another process would) could take the warehouse lock."""
    with warehouse.lock_path(settings.warehouse).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_driver_chdb_opens_the_embedded_warehouse_under_its_lock(settings: Settings) -> None:
    dbt_chdb_bridge.install(settings)
    dbt_chdb_bridge.install(settings)
    client = connections.get_db_client(ClickHouseCredentials(driver="chdb", schema="cinema"))
    try:
        assert client.query("SELECT 40 + 2").result_rows == [(42,)]
        # dbt-clickhouse creates the target schema's database on connecting.
        assert client.command("EXISTS DATABASE cinema") == 1
        assert warehouse.lock_holder(settings.warehouse).startswith(f"pid {os.getpid()} ")
        assert not lock_is_free(settings)
    finally:
        client.close()
    assert lock_is_free(settings)


def test_other_drivers_stay_with_dbt_clickhouse(settings: Settings) -> None:
    dbt_chdb_bridge.install(settings)
    with pytest.raises(FailedToConnectError, match="Unrecognized ClickHouse driver odbc"):
        connections.get_db_client(ClickHouseCredentials(driver="odbc", schema="cinema"))


def test_nothing_is_installed_for_a_clickhouse_server(settings: Settings) -> None:
    upstream = connections.get_db_client
    server = replace(settings, warehouse=replace(settings.warehouse, interface="http"))
    dbt_chdb_bridge.install_if_embedded(server)
    assert connections.get_db_client is upstream
    dbt_chdb_bridge.install_if_embedded(settings)
    assert connections.get_db_client is not upstream
