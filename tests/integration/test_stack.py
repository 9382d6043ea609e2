"""`cinema stack`: two PostgreSQL 18 servers, logical replication, idempotent lifecycle."""

from __future__ import annotations

import json

import psycopg2
import pytest

from cinema import db
from cinema.names import SUBSCRIPTION
from cinema.replication import wait_for_subscriber

pytestmark = pytest.mark.integration


def event_ids(settings, side: str) -> set[int]:
    with db.closing(db.monitor(settings, side)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM viewing_events")
        return {row[0] for row in cursor.fetchall()}


def test_both_servers_run_postgresql_18_with_logical_wal(stack):
    for side in ("publisher", "subscriber"):
        with db.closing(db.admin(stack.settings, side)) as connection:
            assert str(db.scalar(connection, "SHOW server_version")).startswith("18.")
            assert db.scalar(connection, "SHOW wal_level") == "logical"
            assert db.scalar(connection, "SHOW listen_addresses") == "127.0.0.1"


def test_replication_delivers_exactly_the_publishers_event_ids(stack):
    stack.cinema("generate", "--events", "20000", "--seed", "101", "--writers", "4", "--chunk-size", "1000")
    wait_for_subscriber(stack.settings, timeout_seconds=60)
    published = event_ids(stack.settings, "publisher")
    assert len(published) >= 20_000
    assert event_ids(stack.settings, "subscriber") == published


def test_subscription_is_streaming_with_the_stated_options(stack):
    with db.closing(db.admin(stack.settings, "subscriber")) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT substream, subbinary FROM pg_subscription WHERE subname = %s",
            (SUBSCRIPTION,),
        )
        assert cursor.fetchone() == ("p", True)
    status = json.loads(stack.cinema("stack", "status", "--json").stdout)
    assert status["replication"]["state"] == "streaming"
    assert status["publisher"]["running"] and status["subscriber"]["running"]


def test_stack_up_twice_changes_nothing(stack):
    before = json.loads(stack.cinema("stack", "status", "--json").stdout)
    stack.cinema("stack", "up")
    stack.cinema("stack", "up")
    after = json.loads(stack.cinema("stack", "status", "--json").stdout)
    assert after["publisher"]["events"] == before["publisher"]["events"]
    assert after["subscriber"]["events"] == before["subscriber"]["events"]
    with db.closing(db.admin(stack.settings, "subscriber")) as connection:
        assert db.scalar(connection, "SELECT count(*) FROM pg_subscription") == 1
    with db.closing(db.admin(stack.settings, "publisher")) as connection:
        assert db.scalar(connection, "SELECT count(*) FROM pg_publication") == 2


def test_down_then_up_keeps_data_and_replication(stack):
    before = event_ids(stack.settings, "publisher")
    result = stack.cinema("stack", "down")
    assert "publisher" in result.stdout and "subscriber" in result.stdout
    status = json.loads(stack.cinema("stack", "status", "--json").stdout)
    assert not status["publisher"]["running"]
    assert not status["publisher"]["reachable"]
    assert stack.cinema("stack", "down").stdout.strip() == "stopped: nothing was running"
    stack.cinema("stack", "up")
    assert event_ids(stack.settings, "publisher") == before
    stack.cinema("generate", "--events", "3000", "--seed", "102")
    wait_for_subscriber(stack.settings, timeout_seconds=60)
    assert event_ids(stack.settings, "subscriber") == event_ids(stack.settings, "publisher")


@pytest.mark.parametrize(
    ("role", "side", "statement"),
    [
        ("producer", "publisher", "SELECT count(*) FROM viewing_events"),
        ("producer", "publisher", "DELETE FROM viewing_events"),
        ("producer", "publisher", "UPDATE users SET plan = 'premium'"),
        (
            "loader",
            "subscriber",
            "INSERT INTO movies (movie_id, title, release_year, genre, runtime_seconds)"
            " VALUES (9999, 'x', 2000, 'Drama', 60)",
        ),
        ("loader", "subscriber", "DELETE FROM viewing_events"),
        ("monitor", "publisher", "DELETE FROM viewing_events"),
    ],
)
def test_roles_have_least_privilege(stack, role, side, statement):
    connect = {
        "producer": lambda: db.producer(stack.settings),
        "loader": lambda: db.loader(stack.settings),
        "monitor": lambda: db.monitor(stack.settings, side),
    }[role]
    with (
        db.closing(connect()) as connection,
        connection.cursor() as cursor,
        pytest.raises(psycopg2.errors.InsufficientPrivilege),
    ):
        cursor.execute(statement)


def test_passwords_are_required_on_loopback(stack):
    server = stack.settings.publisher
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        db.connect(server, server.admin_user, "wrong-password")
