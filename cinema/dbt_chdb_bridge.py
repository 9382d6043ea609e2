"""TEMPORARY BRIDGE: dbt-clickhouse on embedded ClickHouse (chdb).

Delete this module when dbt-clickhouse ships its own chdb driver
(ClickHouse/dbt-clickhouse#693, "feat: add embedded chDB driver (driver: chdb)"):
then pin that release, add its `chdb_path` to the `warehouse` target in
dbt_project/profiles.yml, and drop the `install_*` calls (cinema/transform.py and
the Airflow DAG's dbt hook).

dbt-clickhouse 1.10.3 knows the drivers `http` and `native` only. With the embedded
warehouse the profile says `driver: chdb`, the shape #693 accepts; this module teaches the
installed adapter that driver: its HTTP client class, unchanged, except that the
connection it wraps is clickhouse-connect's chdb client from
`cinema.warehouse.connect`, which holds the warehouse's per-process lock (only one
process may open a chdb directory) and releases it when dbt closes the connection.
"""

from __future__ import annotations

from typing import Any

from cinema.settings import Settings

DRIVER = "chdb"


def install(settings: Settings) -> None:
    """Make dbt-clickhouse accept `driver: chdb` in this process (idempotent; the
    settings of the latest call win)."""
    from dbt.adapters.clickhouse import connections, dbclient
    from dbt.adapters.clickhouse.httpclient import ChHttpClient

    from cinema import warehouse

    class ChdbClient(ChHttpClient):
        def _create_client(self, credentials: Any) -> Any:
            return warehouse.connect(settings, client_settings=self._conn_settings)

    def get_db_client(credentials: Any) -> Any:
        if credentials.driver == DRIVER:
            return ChdbClient(credentials)
        return dbclient.get_db_client(credentials)

    # connections.py imported get_db_client by name (dbclient keeps the original),
    # so that name is the one dbt-clickhouse calls for every new connection.
    connections.get_db_client = get_db_client  # type: ignore[attr-defined]


def install_if_embedded(settings: Settings) -> None:
    if settings.warehouse.interface == "chdb":
        install(settings)
