"""PostgreSQL connections, one function per role so each caller gets only the rights it needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions

from cinema.settings import PostgresServer, Settings

Connection = psycopg2.extensions.connection


def connect(
    server: PostgresServer,
    user: str,
    password: str,
    *,
    database: str | None = None,
    application_name: str = "cinema",
    autocommit: bool = False,
) -> Connection:
    connection = psycopg2.connect(
        host=server.host,
        port=server.port,
        dbname=database or server.database,
        user=user,
        password=password,
        application_name=application_name,
        connect_timeout=10,
        # TCP keepalives on every connection: a session whose peer vanished (a dead loader
        # host holding the advisory lock, a subscriber gone from the network) is noticed by
        # the server and the client within about a minute, not the kernel's two hours.
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    connection.autocommit = autocommit
    return connection


def admin(settings: Settings, side: str, *, database: str | None = None) -> Connection:
    server = settings.publisher if side == "publisher" else settings.subscriber
    return connect(
        server,
        server.admin_user,
        server.admin_password,
        database=database,
        application_name="cinema-admin",
        autocommit=True,
    )


def monitor(settings: Settings, side: str) -> Connection:
    server = settings.publisher if side == "publisher" else settings.subscriber
    return connect(
        server,
        "cinema_monitor",
        settings.roles.monitor_password,
        application_name="cinema-monitor",
        autocommit=True,
    )


def producer(settings: Settings) -> Connection:
    return connect(
        settings.publisher,
        "cinema_producer",
        settings.roles.producer_password,
        application_name="cinema-producer",
    )


def loader(settings: Settings) -> Connection:
    return connect(
        settings.subscriber,
        "cinema_loader",
        settings.roles.loader_password,
        application_name="cinema-loader",
        autocommit=True,
    )


@contextmanager
def closing(connection: Connection) -> Iterator[Connection]:
    """psycopg2's own context manager ends a transaction but leaves the connection open."""
    try:
        yield connection
    finally:
        connection.close()


def run_as_admin(settings: Settings, side: str, *statements: str, database: str | None = None) -> None:
    """Run statements one by one in autocommit (CREATE DATABASE, ALTER SUBSCRIPTION, ... need it)."""
    with closing(admin(settings, side, database=database)) as connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def count_events(settings: Settings, side: str) -> int:
    """Rows of viewing_events on one server, as the monitoring role sees them."""
    with closing(monitor(settings, side)) as connection:
        return int(scalar(connection, "SELECT count(*) FROM viewing_events"))


def scalar(connection: Connection, sql: str, params: tuple[object, ...] = ()) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else row[0]
