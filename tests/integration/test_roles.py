"""Least privilege, as the README's role table states it and as the servers grant it.

The table is read from the README and compared with each server's catalogs: table and
column grants, role memberships, the REPLICATION attribute, schema and database grants,
ownership, and which roles may log in at all. A few statements each role must not run
are then tried for real.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg2
import pytest

from cinema import db
from cinema.paths import PROJECT_ROOT
from cinema.settings import Settings

pytestmark = pytest.mark.integration

ROW = re.compile(r"^\| `(?P<role>cinema_\w+)` \| (?P<server>publisher|subscriber) \| (?P<rights>.+) \|$")
GRANT = re.compile(r"^(?P<privileges>[A-Z]+(?:, [A-Z]+)*) on (?P<objects>`[\w.]+`(?:, `[\w.]+`)*)$")
MEMBERSHIP = re.compile(r"^member of (?P<roles>`\w+`(?:, `\w+`)*)$")


@dataclass
class Rights:
    tables: set[tuple[str, str]] = field(default_factory=set)
    columns: set[tuple[str, str, str]] = field(default_factory=set)
    memberships: set[str] = field(default_factory=set)
    replication: bool = False


def names(listed: str) -> list[str]:
    return re.findall(r"`([\w.]+)`", listed)


def parse_rights(text: str) -> Rights:
    rights = Rights()
    for clause in re.sub(r"\s*\([^)]*\)", "", text).split("; "):
        if clause == "REPLICATION":
            rights.replication = True
        elif membership := MEMBERSHIP.match(clause):
            rights.memberships |= set(names(membership["roles"]))
        elif grant := GRANT.match(clause):
            for privilege in grant["privileges"].split(", "):
                for name in names(grant["objects"]):
                    table, _, column = name.partition(".")
                    if column:
                        rights.columns.add((table, column, privilege))
                    else:
                        rights.tables.add((table, privilege))
        else:
            raise AssertionError(f"the README's role table has a right the test cannot read: {clause!r}")
    return rights


def readme_roles(server: str) -> dict[str, Rights]:
    rows = [ROW.match(line) for line in (PROJECT_ROOT / "README.md").read_text().splitlines()]
    return {row["role"]: parse_rights(row["rights"]) for row in rows if row and row["server"] == server}


def granted(settings: Settings, side: str, roles: list[str]) -> dict[str, Rights]:
    """What the server grants each role, from its catalogs."""
    found = {role: Rights() for role in roles}
    with db.closing(db.admin(settings, side)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = ANY(%s)",
            (roles,),
        )
        for role, table, privilege in cursor.fetchall():
            found[role].tables.add((table, privilege))
        cursor.execute(
            "SELECT grantee::regrole::text, attrelid::regclass::text, attname, privilege_type "
            "FROM pg_attribute, aclexplode(attacl) WHERE attacl IS NOT NULL AND grantee::regrole::text = ANY(%s)",
            (roles,),
        )
        for role, table, column, privilege in cursor.fetchall():
            found[role].columns.add((table, column, privilege))
        cursor.execute(
            "SELECT member::regrole::text, roleid::regrole::text FROM pg_auth_members "
            "WHERE member::regrole::text = ANY(%s)",
            (roles,),
        )
        for role, group in cursor.fetchall():
            found[role].memberships.add(group)
        cursor.execute("SELECT rolname, rolreplication FROM pg_roles WHERE rolname = ANY(%s)", (roles,))
        for role, replication in cursor.fetchall():
            found[role].replication = replication
    return found


@pytest.mark.parametrize("side", ["publisher", "subscriber"])
def test_the_role_table_is_what_the_servers_grant(stack, side):
    stated = readme_roles(side)
    assert stated, f"the README's role table has no row for the {side}"
    roles = sorted(stated)
    admin = (stack.settings.publisher if side == "publisher" else stack.settings.subscriber).admin_user

    assert granted(stack.settings, side, roles) == stated

    with db.closing(db.admin(stack.settings, side)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname <> %s ORDER BY rolname", (admin,))
        assert [row[0] for row in cursor.fetchall()] == roles, "a role logs in that the README does not list"
        cursor.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s) "
            "AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolinherit IS NOT TRUE)",
            (roles,),
        )
        assert cursor.fetchone() == (0,), "a role has an attribute the README does not state"
        cursor.execute(
            "SELECT grantee::regrole::text, nspname, privilege_type FROM pg_namespace, aclexplode(nspacl) "
            "WHERE grantee::regrole::text = ANY(%s) OR (grantee = 0 AND nspname = 'public')",
            (roles,),
        )
        schemas = set(cursor.fetchall())
        assert schemas == {(role, "public", "USAGE") for role in roles}
        cursor.execute(
            "SELECT count(*) FROM pg_database, aclexplode(datacl) WHERE grantee::regrole::text = ANY(%s)", (roles,)
        )
        assert cursor.fetchone() == (0,), "a role has rights on a database"
        cursor.execute(
            "SELECT count(*) FROM pg_class WHERE relowner::regrole::text = ANY(%s)"
            " UNION ALL SELECT count(*) FROM pg_namespace WHERE nspowner::regrole::text = ANY(%s)"
            " UNION ALL SELECT count(*) FROM pg_proc WHERE proowner::regrole::text = ANY(%s)",
            (roles, roles, roles),
        )
        assert cursor.fetchall() == [(0,), (0,), (0,)], "a role owns something (an owner has every right on it)"


def connect_as(settings: Settings, role: str, side: str) -> db.Connection:
    server = settings.publisher if side == "publisher" else settings.subscriber
    password = {
        "cinema_producer": settings.roles.producer_password,
        "cinema_replicator": settings.roles.replication_password,
        "cinema_loader": settings.roles.loader_password,
        "cinema_monitor": settings.roles.monitor_password,
    }[role]
    return db.connect(server, role, password, application_name="cinema-role-test")


@pytest.mark.parametrize(
    ("role", "side", "statement"),
    [
        (
            "cinema_replicator",
            "publisher",
            "INSERT INTO producer_batches (run_key, chunk_no, events) VALUES ('x', 0, 0)",
        ),
        ("cinema_replicator", "publisher", "UPDATE users SET plan = 'premium'"),
        ("cinema_replicator", "publisher", "DELETE FROM viewing_events"),
        ("cinema_replicator", "publisher", "SELECT count(*) FROM producer_batches"),
        ("cinema_monitor", "subscriber", "DELETE FROM viewing_events"),
        ("cinema_monitor", "subscriber", "UPDATE movies SET title = 'x'"),
        ("cinema_producer", "publisher", "SELECT display_name FROM users"),
        ("cinema_producer", "publisher", "SELECT title FROM movies"),
        ("cinema_producer", "publisher", "CREATE TABLE public.scratch (n integer)"),
        ("cinema_loader", "subscriber", "UPDATE users SET plan = 'premium'"),
    ],
)
def test_a_role_cannot_do_more_than_its_rights(stack, role, side, statement):
    with (
        db.closing(connect_as(stack.settings, role, side)) as connection,
        connection.cursor() as cursor,
        pytest.raises(psycopg2.errors.InsufficientPrivilege),
    ):
        cursor.execute(statement)


@pytest.mark.parametrize(
    ("role", "side", "statement"),
    [
        ("cinema_replicator", "publisher", "SELECT count(*) FROM viewing_events"),
        ("cinema_producer", "publisher", "SELECT count(user_id) FROM users"),
        ("cinema_producer", "publisher", "SELECT count(*) FROM producer_batches"),
        ("cinema_monitor", "subscriber", "SELECT count(*) FROM viewing_events"),
        ("cinema_loader", "subscriber", "SELECT count(*) FROM pg_stat_activity WHERE query_start IS NOT NULL"),
    ],
)
def test_a_role_can_do_what_its_rights_say(stack, role, side, statement):
    with db.closing(connect_as(stack.settings, role, side)) as connection:
        assert db.scalar(connection, statement) >= 0
