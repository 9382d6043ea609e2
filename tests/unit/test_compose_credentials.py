"""Every Compose service logs in as a user that exists, with its password and the grants it needs.

For each configuration (docker-compose.yaml, and the scale-out overlay merged onto it),
variables are interpolated from a freshly generated `.env` (`make .env`: every secret
different) and each service's environment is resolved as Compose resolves it. Then:

- the accounts the servers hold are read from what creates them: each PostgreSQL
  server's administrator (the image's POSTGRES_USER/_PASSWORD), the roles of
  `postgres_init/*/20_roles.sql` with the passwords the applying container gets, and
  their grants; ClickHouse's administrator and the users of `clickhouse/users.d/*.xml`
  with the passwords the `clickhouse` container gets, their grants normalised by
  ClickHouse's own formatter;
- each command a service runs is run for real (the `cinema` CLI, the functions the
  DAG's Python tasks call, dbt itself) with `cinema.settings` built from exactly that
  environment, the server addresses pointed at loopback stand-ins
  (tests/unit/compose_doors.py) that record the user, password and database the
  client sends;
- each recorded login must name an account of the server the environment points at
  (a service on a network the client shares), with the same password and the grants
  the command needs. Connections made by servers (the subscription, ClickHouse's
  postgresql() pulls, Metabase's connection to ClickHouse and both application
  databases) are checked the same way from the values they are given.
"""

from __future__ import annotations

import ast
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from cinema import db
from cinema.cli import main
from cinema.paths import PROJECT_ROOT
from cinema.replication import publisher_lsn, remaining_bytes
from cinema.settings import Settings, load_settings
from cinema.transform import missing_raw_tables
from cinema.warehouse import warehouse_client
from loader.metrics import Metrics
from loader.raw import pull_source
from loader.service import Loader
from tests.unit.clickhouse_parser import clickhouse_errors
from tests.unit.compose_doors import ClickHouseDoor, Login, PostgresDoor
from tests.unit.compose_resolve import generated_dotenv, interpolated, networks_of, resolved_environment
from tests.unit.test_compose_scale import MERGED
from tests.unit.test_compose_stack import COMPOSE

POSTGRES_SERVERS = {"postgres_publicist": "publisher", "postgres_subscription": "subscriber"}
POSTGRES_PORT, CLICKHOUSE_PORT, METABASE_PORT = 5432, 8123, 3000
# The services that run the DAG's tasks: the scheduler on the LocalExecutor, the
# workers on the CeleryExecutor.
TASK_RUNNERS = {"docker-compose.yaml": "airflow-scheduler", "docker-compose.scale.yaml": "airflow-worker"}


# ---------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Account:
    password: str
    # (privilege, object): ("SELECT", "viewing_events"), ("INSERT", "cinema_raw.*"),
    # ("MEMBER", "pg_monitor"), ("REPLICATION", ""), ("ALL", "*.*").
    grants: frozenset[tuple[str, str]]


def postgres_role_definitions(side: str) -> dict[str, tuple[str, frozenset[tuple[str, str]]]]:
    """role -> (the environment variable holding its password, its grants) from 20_roles.sql."""
    sql = (PROJECT_ROOT / "postgres_init" / side / "20_roles.sql").read_text()
    sql = re.sub(r"--[^\n]*", "", sql)
    variables = dict(re.findall(r"^\\getenv (\w+) (\w+)$", sql, flags=re.MULTILINE))
    roles: dict[str, tuple[str, set[tuple[str, str]]]] = {}
    for role, attributes, variable in re.findall(r"ALTER ROLE (\w+) WITH ([\w ]*?) PASSWORD :'(\w+)';", sql):
        words = set(attributes.split())
        assert "LOGIN" in words, role
        roles[role] = (variables[variable], {("REPLICATION", "")} if "REPLICATION" in words else set())
    for statement in re.findall(r"^GRANT [^;]+;", sql, flags=re.MULTILINE):
        if match := re.fullmatch(r"GRANT (.+?) ON (.+?) TO (.+);", statement):
            privileges, objects, grantees = match.groups()
            if objects.startswith("SCHEMA "):
                continue
            pairs = {
                (privilege.strip().split(" ")[0], table.strip())
                for privilege in privileges.split(",")
                for table in objects.split(",")
            }
        else:
            match = re.fullmatch(r"GRANT (\w+) TO (.+);", statement)
            assert match, statement
            pairs = {("MEMBER", match.group(1))}
            grantees = match.group(2)
        for grantee in grantees.split(","):
            roles[grantee.strip()][1].update(pairs)
    return {role: (variable, frozenset(grants)) for role, (variable, grants) in roles.items()}


def clickhouse_grants(queries: list[str]) -> frozenset[tuple[str, str]]:
    """(privilege, object) pairs of GRANT queries, in ClickHouse's own normal form."""
    formatted = [f"SELECT formatQuery({f'{query} TO probe'!r})" for query in queries]
    assert clickhouse_errors(formatted) == {}
    pairs = set()
    for query in queries:
        match = re.fullmatch(r"GRANT (.+) ON (\S+)", query.strip())
        assert match, f"not a plain GRANT ... ON db.*: {query}"
        privileges, target = match.groups()
        pairs |= {(privilege.strip(), target) for privilege in privileges.split(",")}
    return frozenset(pairs)


def clickhouse_users(server_environment: dict[str, str]) -> dict[str, Account]:
    users = {
        # The image's entrypoint makes CLICKHOUSE_USER an administrator with access management.
        server_environment["CLICKHOUSE_USER"]: Account(
            server_environment["CLICKHOUSE_PASSWORD"], frozenset({("ALL", "*.*")})
        )
    }
    for path in sorted((PROJECT_ROOT / "clickhouse" / "users.d").glob("*.xml")):
        root = ElementTree.parse(path).getroot()  # noqa: S314 (ours)
        for user in root.iterfind("users/*"):
            variable = user.find("password").get("from_env")  # type: ignore[union-attr]
            assert variable in server_environment, f"{path.name}: {user.tag}'s {variable} is not in the container"
            queries = [query.text or "" for query in user.iterfind("grants/query")]
            users[user.tag] = Account(server_environment[variable], clickhouse_grants(queries))
    return users


@dataclass(frozen=True)
class Stack:
    """One configuration, resolved: its services and every server's accounts."""

    name: str
    services: dict[str, dict[str, Any]]
    environments: dict[str, dict[str, str]]
    accounts: dict[str, dict[str, Account]]
    databases: dict[str, str]

    def reaches(self, client: str, server: str) -> bool:
        return bool(networks_of(self.services[client]) & networks_of(self.services[server]))


def resolve(name: str, configuration: dict[str, Any], dotenv: dict[str, str]) -> Stack:
    services = interpolated(configuration, dotenv)["services"]
    environments = {service: resolved_environment(services[service]) for service in services}
    accounts: dict[str, dict[str, Account]] = {}
    databases = {}
    for server, side in POSTGRES_SERVERS.items():
        own = environments[server]
        setup = environments[f"postgres-setup-{side}"]
        accounts[server] = {own["POSTGRES_USER"]: Account(own["POSTGRES_PASSWORD"], frozenset({("ALL", "*")}))}
        for role, (variable, grants) in postgres_role_definitions(side).items():
            # The first-start init and the setup one-shot must set the same password.
            assert own.get(variable, setup[variable]) == setup[variable], (server, variable)
            accounts[server][role] = Account(setup[variable], grants)
        databases[server] = own["POSTGRES_DB"]
    for server in ("airflow-postgres", "metabase-postgres"):
        own = environments[server]
        accounts[server] = {own["POSTGRES_USER"]: Account(own["POSTGRES_PASSWORD"], frozenset({("ALL", "*")}))}
        databases[server] = own["POSTGRES_DB"]
    for server in services:
        if str(services[server].get("image", "")).startswith("clickhouse/clickhouse-server:"):
            accounts[server] = clickhouse_users(environments[server])
    return Stack(name, services, environments, accounts, databases)


@pytest.fixture(scope="module")
def dotenv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return generated_dotenv(tmp_path_factory.mktemp("compose-env"))


@pytest.fixture(scope="module", params=sorted(TASK_RUNNERS))
def stack(request: pytest.FixtureRequest, dotenv: dict[str, str]) -> Stack:
    configuration = COMPOSE if request.param == "docker-compose.yaml" else MERGED
    return resolve(request.param, configuration, dotenv)


# ---------------------------------------------------------------------------- checks


def covered(needed: tuple[str, str], grants: frozenset[tuple[str, str]]) -> bool:
    privilege, target = needed
    database = target.split(".")[0]
    return any(granted in (privilege, "ALL") and on in (target, f"{database}.*", "*.*", "*") for granted, on in grants)


def assert_login(
    stack: Stack, client: str | None, server: str, login: Login, needs: set[tuple[str, str]], what: str
) -> None:
    """`client` None: the host, through a port the dev profile publishes."""
    where = f"{stack.name}: {client or 'the host'} ({what}) -> {server}"
    assert client is None or stack.reaches(client, server), f"{where}: no network in common"
    account = stack.accounts[server].get(login.user)
    assert account is not None, f"{where}: no user {login.user!r} (there are {sorted(stack.accounts[server])})"
    assert login.password == account.password, f"{where}: {login.user!r} sends a password the server does not hold"
    missing = {need for need in needs if not covered(need, account.grants)}
    assert not missing, f"{where}: {login.user!r} lacks {sorted(missing)}"
    if server in stack.databases and login.database:
        assert login.database == stack.databases[server], f"{where}: database {login.database!r}"


ADDRESSES = (
    ("publisher", "POSTGRES_PUBLICIST_HOST", "POSTGRES_PUBLICIST_PORT"),
    ("subscriber", "POSTGRES_SUBSCRIPTION_HOST", "POSTGRES_SUBSCRIPTION_PORT"),
    ("clickhouse", "CLICKHOUSE_HOST", "CLICKHOUSE_PORT"),
)


def published_to(stack: Stack, host: str, port: str) -> str:
    """The service a dev-profile port on the host forwards to (socat TCP-LISTEN ... TCP:service:port)."""
    assert host == "127.0.0.1", f"the dev profile publishes on 127.0.0.1 only, not {host}"
    for service in stack.services.values():
        for published in service.get("ports", []):
            address, _, inside = str(published).rpartition(":")
            if address == f"127.0.0.1:{port}" and "profiles" in service:
                [target] = [word for word in service["command"] if word.startswith("TCP:")]
                name, target_port = target.removeprefix("TCP:").split(":")
                assert service["command"][0].startswith(f"TCP-LISTEN:{inside},"), service["command"]
                assert target_port in (str(POSTGRES_PORT), str(CLICKHOUSE_PORT)), service["command"]
                return name
    return f"<nothing published on 127.0.0.1:{port}>"


@dataclass
class Doors:
    """The stand-ins, and the environment of a service pointed at them."""

    publisher: PostgresDoor
    subscriber: PostgresDoor
    clickhouse: ClickHouseDoor

    def aimed(
        self, stack: Stack, service: str | None, host_environment: dict[str, str] | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(the service's environment with its addresses on the stand-ins, door -> the service it stands for).

        `service` None: a process on the host with `host_environment`, reaching the stack
        through the ports the dev profile publishes. Also set, as the image sets them:
        PATH and HOME; and the state folder is the working directory (a temporary one)."""
        own = stack.environments[service] if service else host_environment or {}
        environment = {
            **own,
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "CINEMA_STATE_DIR": str(Path.cwd() / "state"),
        }
        stands_for = {}
        for door, host, port in ADDRESSES:
            if host not in environment:
                continue
            server = (
                published_to(stack, environment[host], environment.get(port, ""))
                if service is None
                else environment[host]
            )
            expected_port = str(CLICKHOUSE_PORT if door == "clickhouse" else POSTGRES_PORT)
            assert server in stack.services, f"{service}: {host}={environment[host]} is no service"
            assert service is None or environment.get(port) == expected_port, f"{service}: {port}"
            stands_for[door] = server
            environment[host], environment[port] = "127.0.0.1", str(getattr(self, door).port)
        return environment, stands_for

    def take(self) -> dict[str, list[Login]]:
        taken = {
            name: list(dict.fromkeys(getattr(self, name).logins)) for name in ("publisher", "subscriber", "clickhouse")
        }
        for name in taken:
            getattr(self, name).logins.clear()
        return taken


@pytest.fixture(scope="module")
def doors() -> Iterator[Doors]:
    opened = Doors(PostgresDoor(), PostgresDoor(), ClickHouseDoor())
    yield opened
    for door in (opened.publisher, opened.subscriber, opened.clickhouse):
        door.close()


@pytest.fixture
def bare_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without .env: settings come from the environment alone."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def settings_from(environment: dict[str, str]) -> Settings:
    with mock.patch.dict(os.environ, environment, clear=True):
        return load_settings(Path("no-such.env"))


def run_cli(environment: dict[str, str], *args: str, fails: bool = True) -> str:
    """`cinema ARGS` in this process, with exactly `environment`; it is expected to fail at a login."""
    with mock.patch.dict(os.environ, environment, clear=True):
        result = CliRunner().invoke(main, list(args))
    if fails:
        assert result.exit_code != 0, f"cinema {' '.join(args)} got past a refused login: {result.output}"
    return result.output


def attempt(call: Callable[[], object]) -> None:
    """A connection the stand-ins refuse."""
    with pytest.raises(Exception, match=r"(?i)authentication"):
        call()


# What each of the DAG's tasks runs (dags/cinema_elt.py), and what it needs where.
# A CLI command stops at its first refused login, so the connections it opens after
# that are made by the functions it calls, one at a time.
PUBLISHER_EVENTS = {("SELECT", "viewing_events")}
Use = tuple[str, Callable[[Settings, dict[str, str]], None], dict[str, set[tuple[str, str]]]]
DAG_TASK_USES: dict[str, list[Use]] = {
    "generate_events": [
        (
            "cinema generate",
            lambda _settings, env: run_cli(env, "generate", "--events", "10", "--seed", "1"),
            {
                "publisher": {
                    ("INSERT", "viewing_events"),
                    ("INSERT", "producer_batches"),
                    ("SELECT", "producer_batches"),
                }
            },
        )
    ],
    "publisher_position": [
        (
            "publisher_lsn",
            lambda settings, _env: attempt(lambda: publisher_lsn(settings)),
            {"publisher": {("MEMBER", "pg_monitor")}},
        )
    ],
    "wait_for_subscriber": [
        (
            "remaining_bytes",
            lambda settings, _env: attempt(lambda: remaining_bytes(settings, "0/0")),
            {"publisher": {("MEMBER", "pg_monitor")}},
        )
    ],
    "load_warehouse": [
        (
            "cinema load --until-caught-up",
            lambda _s, env: run_cli(env, "load", "--until-caught-up"),
            {"publisher": {("MEMBER", "pg_monitor")}},
        ),
        (
            "its subscriber snapshot",
            lambda settings, _env: attempt(lambda: db.loader(settings)),
            {"subscriber": {("SELECT", "viewing_events")}},
        ),
    ],
    "transform": [
        (
            "dbt, as cosmos runs it (cinema dbt debug)",
            lambda _s, env: run_cli(env, "dbt", "debug"),
            {
                "clickhouse": {
                    ("SELECT", "cinema_raw.*"),
                    ("CREATE TABLE", "cinema_marts.*"),
                    ("DROP TABLE", "cinema_staging.*"),
                }
            },
        ),
        (
            "its check for the raw tables",
            lambda settings, _env: attempt(lambda: missing_raw_tables(settings)),
            {"clickhouse": {("SELECT", "cinema_raw.*")}},
        ),
    ],
    "reconcile": [
        (
            "cinema check",
            lambda _s, env: run_cli(env, "check"),
            {"publisher": PUBLISHER_EVENTS | {("MEMBER", "pg_monitor")}},
        ),
        (
            "its subscriber count",
            lambda settings, _env: attempt(lambda: db.count_events(settings, "subscriber")),
            {"subscriber": {("SELECT", "viewing_events")}},
        ),
        (
            "its warehouse counts",
            lambda settings, _env: attempt(lambda: warehouse_client(settings).__enter__()),
            {"clickhouse": {("SELECT", "cinema_raw.*"), ("SELECT", "cinema_marts.*")}},
        ),
    ],
    "report": [
        ("cinema report", lambda _s, env: run_cli(env, "report"), {"clickhouse": {("SELECT", "cinema_marts.*")}})
    ],
}


def check_uses(stack: Stack, doors: Doors, service: str, uses: list[Use]) -> None:
    environment, stands_for = doors.aimed(stack, service)
    settings = settings_from(environment)
    for what, run, needs in uses:
        run(settings, environment)
        taken = doors.take()
        for door, logins in taken.items():
            if door not in needs:
                assert not logins, f"{stack.name}: {service} ({what}) also logged in to the {door}: {logins}"
                continue
            assert logins, f"{stack.name}: {service} ({what}) never logged in to the {door}"
            for login in logins:
                assert_login(stack, service, stands_for[door], login, needs[door], what)


# ---------------------------------------------------------------------------- the DAG's tasks


def dag_tasks() -> set[str]:
    tree = ast.parse((PROJECT_ROOT / "dags" / "cinema_elt.py").read_text())
    decorated = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and any(ast.unparse(d).startswith("task") for d in node.decorator_list)
    }
    groups = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and ast.unparse(node.value.func) == "DbtTaskGroup"
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return decorated | groups


def test_every_task_of_the_dag_is_checked() -> None:
    assert dag_tasks() == set(DAG_TASK_USES)


@pytest.mark.usefixtures("bare_directory")
def test_the_dags_tasks_log_in_with_the_task_runners_environment(stack: Stack, doors: Doors) -> None:
    runner = TASK_RUNNERS[stack.name]
    for task, uses in DAG_TASK_USES.items():
        check_uses(stack, doors, runner, [(f"{task}: {what}", run, needs) for what, run, needs in uses])


@pytest.mark.usefixtures("bare_directory")
def test_the_report_task_logs_in_as_metabases_reader(stack: Stack, doors: Doors) -> None:
    """The certain failure of every Compose DAG run before: `cinema report` sent an empty password."""
    environment, _ = doors.aimed(stack, TASK_RUNNERS[stack.name])

    run_cli(environment, "report")

    [login] = doors.take()["clickhouse"]
    assert login.user == "cinema_metabase"
    assert login.password == stack.accounts["clickhouse"]["cinema_metabase"].password != ""


# ---------------------------------------------------------------------------- the loader


@pytest.mark.usefixtures("bare_directory")
def test_the_loader_service_logs_in_as_itself(stack: Stack, doors: Doors) -> None:
    def attach(settings: Settings, _env: dict[str, str]) -> None:
        attempt(lambda: Loader(settings, Metrics()).attach())

    loader_needs = {("INSERT", "cinema_raw.*"), ("CREATE TABLE", "cinema_raw.*"), ("POSTGRES", "*.*")}
    check_uses(stack, doors, "loader", [("cinema load --follow: attach", attach, {"clickhouse": loader_needs})])
    check_uses(
        stack,
        doors,
        "loader",
        [
            (
                "its subscriber connection",
                lambda s, _e: attempt(lambda: db.loader(s)),
                {"subscriber": {("SELECT", "viewing_events")}},
            )
        ],
    )


def test_clickhouse_pulls_from_the_subscriber_as_the_loader_role(stack: Stack) -> None:
    source = pull_source(settings_from(stack.environments["loader"]))
    host, _, port = source.address.partition(":")

    assert (host, port) == ("postgres_subscription", str(POSTGRES_PORT))
    assert_login(
        stack,
        "clickhouse",
        host,
        Login(source.user, source.password, source.database),
        {("SELECT", "viewing_events"), ("SELECT", "movies"), ("SELECT", "users")},
        "postgresql() pulls",
    )


# ---------------------------------------------------------------------------- PostgreSQL's setup and replication


def test_the_setup_one_shots_log_in_as_each_servers_administrator(stack: Stack) -> None:
    for server, side in POSTGRES_SERVERS.items():
        environment = stack.environments[f"postgres-setup-{side}"]
        assert environment["PGHOST"] == server and environment["PGPORT"] == str(POSTGRES_PORT)
        login = Login(environment["PGUSER"], environment["PGPASSWORD"], environment["PGDATABASE"])
        assert_login(stack, f"postgres-setup-{side}", server, login, {("ALL", "*")}, "apply.sh")


def test_the_subscription_logs_in_to_the_publisher_as_the_replicator(stack: Stack) -> None:
    for applier in ("postgres_subscription", "postgres-setup-subscriber"):
        environment = stack.environments[applier]
        host = environment["PUBLISHER_HOST_FOR_SUBSCRIBER"]
        assert environment["PUBLISHER_PORT_FOR_SUBSCRIBER"] == str(POSTGRES_PORT)
        login = Login(
            "cinema_replicator", environment["POSTGRES_REPLICATION_PASSWORD"], environment["POSTGRES_PUBLICIST_DB"]
        )
        # The subscriber server makes the connection, whoever runs CREATE SUBSCRIPTION.
        assert_login(stack, "postgres_subscription", host, login, {("REPLICATION", ""), *PUBLISHER_EVENTS}, applier)
    sql = (PROJECT_ROOT / "postgres_init" / "subscriber" / "30_subscription.sql").read_text()
    assert "user=cinema_replicator password=%s" in sql


# ---------------------------------------------------------------------------- Metabase, Airflow's database


@pytest.mark.usefixtures("bare_directory")
def test_metabase_init_hands_metabase_its_read_only_user(stack: Stack) -> None:
    """`cinema metabase provision`, for real, against Metabase's recorded contract up to the point
    where it asks Metabase to add the warehouse; that request is refused, and its body checked."""
    from tests.unit.test_metabase_provision import CONTRACT, RecordedMetabase, serving

    environment = dict(stack.environments["metabase-init"])
    url = urllib.parse.urlsplit(environment["METABASE_URL"])
    assert (url.hostname, url.port) == ("metabase", METABASE_PORT)
    assert stack.reaches("metabase-init", "metabase")
    first = {(e["method"], e["path"]): e for e in CONTRACT["first_run"]}
    health, properties, log_in = CONTRACT["rerun"][:3]
    add_database = first["POST", "/api/database"]
    # The recorded body, less the password: the one under test is this stack's.
    recorded_details = {key: value for key, value in add_database["body"]["details"].items() if key != "password"}
    metabase = RecordedMetabase(
        exchanges=[
            health,
            properties,
            {**log_in, "body": {"username": environment["METABASE_ADMIN_EMAIL"]}},
            first["GET", "/api/database"],
            {
                **add_database,
                "body": {**add_database["body"], "details": recorded_details},
                "status": 400,
                "response": {"message": "a test's stand-in"},
            },
        ]
    )
    with serving(metabase) as metabase_url:
        environment["METABASE_URL"] = metabase_url
        run_cli(environment, "metabase", "provision", "--wait", "5")
    assert metabase.mismatches == []
    [details] = [
        body["details"] for method, path, body in metabase.received if (method, path) == ("POST", "/api/database")
    ]
    assert (details["host"], details["port"]) == ("clickhouse", CLICKHOUSE_PORT)
    login = Login(details["user"], details["password"], "")
    assert_login(stack, "metabase", "clickhouse", login, {("SELECT", "cinema_marts.*")}, "its ClickHouse database")
    assert not stack.reaches("metabase-init", "clickhouse"), "metabase-init never talks to ClickHouse itself"


def test_metabase_and_airflow_reach_their_own_databases(stack: Stack) -> None:
    metabase = stack.environments["metabase"]
    assert (metabase["MB_DB_TYPE"], metabase["MB_DB_PORT"]) == ("postgres", str(POSTGRES_PORT))
    login = Login(metabase["MB_DB_USER"], metabase["MB_DB_PASS"], metabase["MB_DB_DBNAME"])
    assert_login(stack, "metabase", metabase["MB_DB_HOST"], login, {("ALL", "*")}, "its application database")
    airflow = [name for name in stack.services if name.startswith("airflow-") and name != "airflow-postgres"]
    for service in airflow:
        environment = stack.environments[service]
        for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
            if name not in environment:
                continue
            url = urllib.parse.urlsplit(environment[name].removeprefix("db+"))
            assert url.scheme == "postgresql" and url.port in (None, POSTGRES_PORT), (service, name)
            login = Login(url.username or "", urllib.parse.unquote(url.password or ""), url.path.lstrip("/"))
            assert_login(stack, service, url.hostname or "", login, {("ALL", "*")}, name)


# ---------------------------------------------------------------------------- the host, with the dev profile

# What README's Docker Compose section tells a host-side `cinema` to add to the generated .env.
HOST_SIDE_FOR_THE_DEV_PROFILE = {"CLICKHOUSE_INTERFACE": "http"}


@pytest.mark.usefixtures("bare_directory")
def test_cinema_stack_status_on_the_host_sees_the_compose_stack_through_the_dev_profile(
    stack: Stack, doors: Doors, dotenv: dict[str, str]
) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "CLICKHOUSE_INTERFACE=http cinema stack status" in readme
    host = {**dotenv, **HOST_SIDE_FOR_THE_DEV_PROFILE}
    environment, stands_for = doors.aimed(stack, None, host)

    output = run_cli(environment, "stack", "status", "--json", fails=False)

    assert stands_for == {
        "publisher": "postgres_publicist",
        "subscriber": "postgres_subscription",
        "clickhouse": "clickhouse",
    }
    taken = doors.take()
    needs = {
        "publisher": {("MEMBER", "pg_monitor"), *PUBLISHER_EVENTS},
        "subscriber": {("MEMBER", "pg_monitor"), ("SELECT", "viewing_events")},
        "clickhouse": {("SELECT", "cinema_raw.*")},
    }
    for door, logins in taken.items():
        assert logins, f"cinema stack status never asked the {door}: {output}"
        for login in logins:
            assert_login(stack, None, stands_for[door], login, needs[door], "cinema stack status")


# ---------------------------------------------------------------------------- the checker itself


def test_the_check_refuses_a_wrong_password_an_unknown_user_a_missing_grant_and_no_route(stack: Stack) -> None:
    reader = stack.accounts["clickhouse"]["cinema_metabase"]
    marts = {("SELECT", "cinema_marts.*")}
    good = Login("cinema_metabase", reader.password, "")
    assert_login(stack, "metabase", "clickhouse", good, marts, "a good login")

    for login, needs, client, problem in (
        (Login("cinema_metabase", "", ""), marts, "metabase", "password"),
        (Login("cinema_reader", reader.password, ""), marts, "metabase", "no user"),
        (good, {("INSERT", "cinema_marts.*")}, "metabase", "lacks"),
        (good, {("SELECT", "cinema_raw.*")}, "metabase", "lacks"),
        (good, marts, "metabase-init", "no network"),
    ):
        with pytest.raises(AssertionError, match=problem):
            assert_login(stack, client, "clickhouse", login, needs, "a bad login")
