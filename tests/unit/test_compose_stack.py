"""docker-compose.yaml, checked without a Docker engine.

The Compose Specification's JSON schema (as check-jsonschema ships it), the network
segmentation as a reachability matrix, images, healthchecks and start order, every
variable against .env_template, every setting against cinema/settings.py, the
ClickHouse users against their grants (parsed by ClickHouse itself), and hadolint.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jsonschema
import yaml

from cinema.paths import PROJECT_ROOT
from tests.unit.clickhouse_parser import syntax_errors
from tests.unit.compose_resolve import interpolate

COMPOSE_TEXT = (PROJECT_ROOT / "docker-compose.yaml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ENV_TEMPLATE = (PROJECT_ROOT / ".env_template").read_text()
README = (PROJECT_ROOT / "README.md").read_text()
USERS_XML = ElementTree.parse(PROJECT_ROOT / "clickhouse" / "users.d" / "cinema.xml").getroot()  # noqa: S314 (ours)

ONE_SHOTS = {"airflow-init", "metabase-init", "postgres-setup-publisher", "postgres-setup-subscriber"}
DEV_ONLY = {"dev-publisher-port", "dev-subscriber-port", "dev-clickhouse-port"}
# Services whose process is the `cinema` CLI (or runs it, as Airflow's tasks do).
CINEMA_SERVICES = {"loader", "metabase-init", "airflow-scheduler", "producer"}

# Who sits on which network: the whole segmentation. A service on a network not
# listed here, or a new service, fails the matrix test below.
MEMBERSHIP = {
    "postgres_publicist": {"data_postgres", "replication_network", "publisher_setup"},
    "postgres_subscription": {"replication_network", "click_net", "subscriber_setup"},
    "postgres-setup-publisher": {"publisher_setup"},
    "postgres-setup-subscriber": {"subscriber_setup"},
    "clickhouse": {"click_net", "metanet"},
    "loader": {"click_net"},
    "producer": {"data_postgres"},
    "airflow-postgres": {"airflow_internal"},
    "airflow-init": {"airflow_internal"},
    "airflow-apiserver": {"airflow_internal"},
    "airflow-scheduler": {"airflow_internal", "data_postgres", "click_net"},
    "airflow-dag-processor": {"airflow_internal"},
    "airflow-triggerer": {"airflow_internal"},
    "metabase-postgres": {"metabase_internal"},
    "metabase": {"metanet", "metabase_internal", "metabase_api"},
    "metabase-init": {"metabase_api"},
    "dev-publisher-port": {"data_postgres"},
    "dev-subscriber-port": {"click_net"},
    "dev-clickhouse-port": {"click_net"},
}

# Which service reaches which, and over which network, for the data path. (Airflow's
# own components also reach each other and their database over airflow_internal.)
REACHES = {
    "postgres_publicist": {
        "postgres_subscription": {"replication_network"},
        "airflow-scheduler": {"data_postgres"},
        "dev-publisher-port": {"data_postgres"},
        "postgres-setup-publisher": {"publisher_setup"},
        "producer": {"data_postgres"},
    },
    "postgres_subscription": {
        "postgres_publicist": {"replication_network"},
        "clickhouse": {"click_net"},
        "loader": {"click_net"},
        "airflow-scheduler": {"click_net"},
        "dev-subscriber-port": {"click_net"},
        "dev-clickhouse-port": {"click_net"},
        "postgres-setup-subscriber": {"subscriber_setup"},
    },
    "clickhouse": {
        "postgres_subscription": {"click_net"},
        "loader": {"click_net"},
        "airflow-scheduler": {"click_net"},
        "metabase": {"metanet"},
        "dev-subscriber-port": {"click_net"},
        "dev-clickhouse-port": {"click_net"},
    },
    "loader": {
        "postgres_subscription": {"click_net"},
        "clickhouse": {"click_net"},
        "airflow-scheduler": {"click_net"},
        "dev-subscriber-port": {"click_net"},
        "dev-clickhouse-port": {"click_net"},
    },
    "metabase": {
        "clickhouse": {"metanet"},
        "metabase-init": {"metabase_api"},
        "metabase-postgres": {"metabase_internal"},
    },
    # Metabase only: it never talks to ClickHouse itself.
    "metabase-init": {"metabase": {"metabase_api"}},
    "postgres-setup-publisher": {"postgres_publicist": {"publisher_setup"}},
    "postgres-setup-subscriber": {"postgres_subscription": {"subscriber_setup"}},
}

# The original's subnets, each the default of a variable a host whose LAN or Docker
# address pool overlaps can set in .env.
NAMED_SUBNETS = {
    "replication_network": ("REPLICATION_SUBNET", "192.168.1.0/24"),
    "click_net": ("CLICK_NET_SUBNET", "192.168.2.0/24"),
    "metanet": ("METANET_SUBNET", "192.168.3.0/24"),
}


# `services`: another configuration's, e.g. the scale-out overlay merged onto this file.
def networks_of(service: str, services: dict[str, dict[str, Any]] = SERVICES) -> set[str]:
    networks = services[service].get("networks", [])
    return set(networks if isinstance(networks, list) else networks.keys())


def reaches(service: str, services: dict[str, dict[str, Any]] = SERVICES) -> dict[str, set[str]]:
    peers: dict[str, set[str]] = {}
    for other in services:
        shared = networks_of(service, services) & networks_of(other, services)
        if other != service and shared:
            peers[other] = shared
    return peers


def environment_of(service: str, services: dict[str, dict[str, Any]] = SERVICES) -> dict[str, str]:
    environment = services[service].get("environment", {})
    assert isinstance(environment, dict), f"{service}: environment as a mapping, please"
    return {name: str(value) for name, value in environment.items()}


def template_variables() -> set[str]:
    """Every variable .env_template defines, including the commented-out optional ones."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_TEMPLATE, flags=re.MULTILINE))


def template_default(name: str) -> str:
    match = re.search(rf"^{name}=(.*)$", ENV_TEMPLATE, flags=re.MULTILINE)
    assert match, name
    return match.group(1)


def settings_read() -> tuple[set[str], set[str]]:
    """(every variable cinema/settings.py reads, those it requires: read without a default)."""
    tree = ast.parse((PROJECT_ROOT / "cinema" / "settings.py").read_text())
    read: set[str] = set()
    required: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"text", "number", "seconds", "config"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            read.add(node.args[0].value)
            if len(node.args) == 1 and not node.keywords:
                required.add(node.args[0].value)
        # `_positive_seconds(config, NAME, default)`: always with a default.
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_positive_seconds"
            and isinstance(node.args[1], ast.Constant)
        ):
            read.add(str(node.args[1].value))
    return read, required


# ---------------------------------------------------------------------------- schema


def compose_validator() -> jsonschema.Draft202012Validator:
    schema_file = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_compose_file_follows_the_compose_specification() -> None:
    validator = compose_validator()

    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(COMPOSE)]

    assert errors == []
    broken = {**COMPOSE, "services": {**SERVICES, "loader": {**SERVICES["loader"], "healthcheck": {"tset": []}}}}
    assert not validator.is_valid(broken), "the schema must catch a misspelt key"


def test_depends_on_names_real_services_and_waits_on_what_they_offer() -> None:
    for name, service in SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}'s health: none defined"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}: {condition}"
                assert dependency in ONE_SHOTS, f"{name} waits for long-running {dependency} to exit"
            assert "profiles" not in SERVICES[dependency] or "profiles" in service, (
                f"{name} needs a profile-only service"
            )
    assert "sleep" not in COMPOSE_TEXT, "order comes from healthchecks and depends_on, never from sleeps"


# ---------------------------------------------------------------------------- networks


def test_every_service_sits_exactly_on_its_networks() -> None:
    assert {name: networks_of(name) for name in SERVICES} == MEMBERSHIP


def test_reachability_matrix() -> None:
    for service, expected in REACHES.items():
        assert reaches(service) == expected, service


def test_segmentation_rules_of_the_original() -> None:
    assert networks_of("postgres_publicist").isdisjoint({"click_net", "metanet"})
    # Replication crosses replication_network only: the two servers share nothing else,
    # and nothing else is on it.
    assert networks_of("postgres_publicist") & networks_of("postgres_subscription") == {"replication_network"}
    on_replication = {name for name in SERVICES if "replication_network" in networks_of(name)}
    assert on_replication == {"postgres_publicist", "postgres_subscription"}
    # Metabase reaches ClickHouse and its own database; no other data store.
    stores = {"postgres_publicist", "postgres_subscription", "clickhouse", "airflow-postgres", "metabase-postgres"}
    assert set(reaches("metabase")) & stores == {"clickhouse", "metabase-postgres"}
    assert COMPOSE["networks"]["metabase_internal"] == {"internal": True}


def test_the_four_networks_of_the_original_exist_with_their_subnets_by_default() -> None:
    networks = COMPOSE["networks"]
    assert "data_postgres" in networks
    for name, (variable, subnet) in NAMED_SUBNETS.items():
        assert networks[name]["ipam"]["config"] == [{"subnet": f"${{{variable}:-{subnet}}}"}], name
        assert template_default(variable) == subnet, variable
        assert interpolate(f"${{{variable}:-{subnet}}}", {}) == subnet
        assert interpolate(f"${{{variable}:-{subnet}}}", {variable: "10.99.1.0/24"}) == "10.99.1.0/24"
    assert re.search(r"\| Compose: `Pool overlaps with other one on this address space` \|", README), (
        "README's Troubleshooting has no entry for overlapping subnets"
    )


def test_the_setup_networks_and_metabases_api_network_lead_nowhere_else() -> None:
    for name in ("metabase_api", "publisher_setup", "subscriber_setup", "metabase_internal"):
        assert COMPOSE["networks"][name] == {"internal": True}, name


def test_only_the_user_interfaces_are_published_by_default() -> None:
    published: dict[str, list[str]] = {}
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            published.setdefault(name, []).append(str(port))
    default = {name: ports for name, ports in published.items() if "profiles" not in SERVICES[name]}
    assert default == {
        "airflow-apiserver": ["${UI_BIND_ADDRESS:-127.0.0.1}:8080:8080"],
        "metabase": ["${UI_BIND_ADDRESS:-127.0.0.1}:3000:3000"],
    }
    dev = {name: ports for name, ports in published.items() if name not in default}
    assert set(dev) == DEV_ONLY
    for name, ports in dev.items():
        assert SERVICES[name]["profiles"] == ["dev"], name
        assert all(port.startswith("127.0.0.1:") for port in ports), name


# ---------------------------------------------------------------------------- images, health


def test_every_service_has_a_pinned_image_or_a_build() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if "build" in service:
            assert image.endswith(":local"), f"{name}: built images are tagged :local, never pulled"
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: no image"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart_forever() -> None:
    for name, service in SERVICES.items():
        if name in ONE_SHOTS:
            assert service["restart"] in ("no", "on-failure:5"), name
            assert "healthcheck" not in service, name
        else:
            test = service["healthcheck"]["test"]
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
            assert service["restart"] == "unless-stopped", name


def test_postgres_servers_run_18_with_logical_wal_and_the_shared_init() -> None:
    for name, side in (("postgres_publicist", "publisher"), ("postgres_subscription", "subscriber")):
        service = SERVICES[name]
        assert service["image"].startswith("postgres:18."), name
        assert service["command"] == ["postgres", "-c", "wal_level=logical"], name
        assert environment_of(name)["CINEMA_POSTGRES_SIDE"] == side
        assert "./postgres_init/docker-initdb.sh:/docker-entrypoint-initdb.d/cinema.sh:ro" in service["volumes"]
    for name in ("postgres_publicist", "postgres_subscription", "airflow-postgres", "metabase-postgres"):
        # postgres:18 keeps its data in /var/lib/postgresql/18/docker: the volume goes one level up.
        assert any(str(v).endswith(":/var/lib/postgresql") for v in SERVICES[name]["volumes"]), name


AIRFLOW_HEALTH = {"interval": "30s", "timeout": "10s", "retries": 5, "start_period": "30s"}


def test_airflow_components_are_probed_on_airflows_own_schedule() -> None:
    """Each probe starts an Airflow process (or asks its API): every 30 s with 10 s to answer,
    as Airflow's own docker-compose.yaml does, not every 5 s."""
    components = [
        name for name in SERVICES if name.startswith("airflow-") and name not in ONE_SHOTS | {"airflow-postgres"}
    ]
    assert len(components) == 4
    for name in components:
        healthcheck = {key: value for key, value in SERVICES[name]["healthcheck"].items() if key != "test"}
        assert healthcheck == AIRFLOW_HEALTH, name


def apply_sh_requires(side: str) -> set[str]:
    apply_sh = (PROJECT_ROOT / "postgres_init" / "apply.sh").read_text()
    block = re.search(rf"{side}\)\s*required=\(([^)]*)\)", apply_sh)
    assert block, side
    return set(block.group(1).split())


def test_postgres_setup_is_applied_again_on_every_up_over_tcp() -> None:
    for server, side in (("postgres_publicist", "publisher"), ("postgres_subscription", "subscriber")):
        name = f"postgres-setup-{side}"
        service = SERVICES[name]
        environment = environment_of(name)
        assert "profiles" not in service, f"{name} runs on every `docker compose up`"
        assert service["image"] == SERVICES[server]["image"], name
        assert service["command"] == ["bash", "/opt/cinema/postgres_init/apply.sh", side], name
        assert "./postgres_init:/opt/cinema/postgres_init:ro" in service["volumes"], name
        # Over TCP, as the server's administrator, into its database: the same values its init uses.
        assert environment["PGHOST"] == server and environment["PGPORT"] == "5432", name
        for pg, postgres in (
            ("PGUSER", "POSTGRES_USER"),
            ("PGPASSWORD", "POSTGRES_PASSWORD"),
            ("PGDATABASE", "POSTGRES_DB"),
        ):
            assert environment[pg] == environment_of(server)[postgres], (name, pg)
        assert apply_sh_requires(side) <= set(environment), f"{name} lacks {apply_sh_requires(side) - set(environment)}"
        assert service["depends_on"][server] == {"condition": "service_healthy"}, name
    subscriber_setup = SERVICES["postgres-setup-subscriber"]["depends_on"]
    assert subscriber_setup["postgres-setup-publisher"] == {"condition": "service_completed_successfully"}
    # Whatever uses the roles waits for them.
    for name in ("loader", "airflow-scheduler"):
        assert SERVICES[name]["depends_on"]["postgres-setup-subscriber"] == {
            "condition": "service_completed_successfully"
        }
    assert SERVICES["airflow-scheduler"]["depends_on"]["postgres-setup-publisher"] == {
        "condition": "service_completed_successfully"
    }


def test_postgres_init_gets_every_variable_apply_sh_requires() -> None:
    apply_sh = (PROJECT_ROOT / "postgres_init" / "apply.sh").read_text()
    wrapper = (PROJECT_ROOT / "postgres_init" / "docker-initdb.sh").read_text()
    assert "/opt/cinema/postgres_init/apply.sh" in wrapper
    for name, side in (("postgres_publicist", "publisher"), ("postgres_subscription", "subscriber")):
        block = re.search(rf"{side}\)\s*required=\(([^)]*)\)", apply_sh)
        assert block, side
        required = set(block.group(1).split()) | {"POSTGRES_USER", "POSTGRES_DB"}
        assert required <= set(environment_of(name)), f"{name} lacks {required - set(environment_of(name))}"


def test_metabase_version_is_the_one_the_provisioning_was_written_against() -> None:
    contract = json.loads((PROJECT_ROOT / "tests" / "unit" / "contracts" / "metabase_v0.58.json").read_text())
    docstring = (PROJECT_ROOT / "metabase" / "__init__.py").read_text()

    assert SERVICES["metabase"]["image"] == f"metabase/metabase:{contract['metabase_version']}"
    assert f"metabase/metabase:{contract['metabase_version']}" in docstring


# ---------------------------------------------------------------------------- variables, settings


def test_every_compose_variable_is_defined_in_env_template() -> None:
    code = "\n".join(line for line in COMPOSE_TEXT.splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", code))

    assert used - template_variables() == set()
    assert "POSTGRES_PUBLICIST_PASSWORD" in used


def test_every_env_template_variable_says_required_or_optional() -> None:
    lines = ENV_TEMPLATE.splitlines()
    assignment = re.compile(r"^#? ?[A-Z][A-Z0-9_]*=")
    for number, line in enumerate(lines):
        if not assignment.match(line):
            continue
        above = number - 1
        while above >= 0 and assignment.match(lines[above]):
            above -= 1
        comment = []
        while above >= 0 and lines[above].startswith("#") and not assignment.match(lines[above]):
            comment.append(lines[above])
            above -= 1
        assert re.search(r"\b(Required|Optional)\b", " ".join(comment)), f".env_template line {number + 1}: {line}"


# Read by third-party tools, not by the project: the telemetry opt-out.
TOOL_OPT_OUTS = {"DO_NOT_TRACK"}


def test_containers_get_only_settings_the_project_reads_and_every_required_one() -> None:
    read, required = settings_read()
    withheld = {key for key, value in COMPOSE["x-withheld-postgres-secrets"].items() if value == ""}
    for service in CINEMA_SERVICES:
        environment = environment_of(service)
        project = {
            name for name in environment if not name.startswith(("AIRFLOW_", "_AIRFLOW")) and name not in TOOL_OPT_OUTS
        }
        assert project - read == set(), service
        assert required <= set(environment), f"{service} lacks {required - set(environment)}"
        empty = {name for name, value in environment.items() if value == ""} - {"AIRFLOW__CORE__FERNET_KEY"}
        assert empty <= withheld, f"{service}: only withheld PostgreSQL secrets may be empty, not {empty - withheld}"
        assert environment["CLICKHOUSE_HOST"] == "clickhouse", service
    for service in ("loader", "airflow-scheduler"):
        assert environment_of(service)["CLICKHOUSE_INTERFACE"] == "http", service


def test_each_container_gets_the_secrets_of_its_own_roles_only() -> None:
    def given(service: str) -> set[str]:
        return {name for name, value in environment_of(service).items() if value and re.search("PASS|SECRET", name)}

    assert given("loader") == {
        "POSTGRES_LOADER_PASSWORD",
        "POSTGRES_MONITOR_PASSWORD",
        "CLICKHOUSE_LOADER_PASSWORD",
        "CLICKHOUSE_PASSWORD",
    }
    assert environment_of("loader")["CLICKHOUSE_PASSWORD"] == environment_of("loader")["CLICKHOUSE_LOADER_PASSWORD"]
    assert given("airflow-scheduler") == {
        "POSTGRES_PRODUCER_PASSWORD",
        "POSTGRES_MONITOR_PASSWORD",
        "POSTGRES_LOADER_PASSWORD",
        "CLICKHOUSE_DBT_PASSWORD",
        "CLICKHOUSE_PASSWORD",
        # `cinema report`, the DAG's last task, reads the marts as Metabase's reader.
        "CLICKHOUSE_METABASE_PASSWORD",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
    }
    assert given("metabase-init") == {"METABASE_ADMIN_PASSWORD", "CLICKHOUSE_METABASE_PASSWORD"}
    assert given("producer") == {"POSTGRES_PRODUCER_PASSWORD"}
    assert given("metabase") == {"MB_DB_PASS", "MB_ENCRYPTION_SECRET_KEY"}
    assert environment_of("airflow-scheduler")["LOADER_RUNS_AS_SERVICE"] == "true"
    # dbt_project/profiles.yml follows the same switch as the rest of the code.
    assert environment_of("airflow-scheduler")["CLICKHOUSE_INTERFACE"] == "http"


def test_airflow_settings_are_real_airflow_options() -> None:
    # Located, not imported: importing airflow would set up an AIRFLOW_HOME on this machine.
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.origin is not None
    options = yaml.safe_load((Path(spec.origin).parent / "config_templates" / "config.yml").read_text())
    airflow_services = [name for name in SERVICES if name.startswith("airflow-") and name != "airflow-postgres"]
    for service in airflow_services:
        for name in environment_of(service):
            if not name.startswith("AIRFLOW__"):
                continue
            section, option = name.removeprefix("AIRFLOW__").lower().split("__", 1)
            assert option in options.get(section, {}).get("options", {}), f"{service}: {name} is no Airflow option"
        jwt_secret = environment_of(service)["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert jwt_secret == "${AIRFLOW_JWT_SECRET:?run make .env}", service  # noqa: S105 (a reference)


# ---------------------------------------------------------------------------- ClickHouse users


def xml_users() -> dict[str, ElementTree.Element]:
    users = USERS_XML.find("users")
    assert users is not None
    return {user.tag: user for user in users}


def grants(user: ElementTree.Element) -> list[str]:
    return [query.text or "" for query in user.iterfind("grants/query")]


def test_clickhouse_users_match_the_settings_and_get_their_passwords() -> None:
    users = xml_users()
    clickhouse_environment = environment_of("clickhouse")

    assert set(users) == {
        template_default("CLICKHOUSE_LOADER_USER"),
        template_default("CLICKHOUSE_DBT_USER"),
        template_default("CLICKHOUSE_METABASE_USER"),
    }
    for user in users.values():
        password = user.find("password")
        assert password is not None and password.get("from_env") in clickhouse_environment, user.tag
        assert clickhouse_environment[password.get("from_env", "")].endswith(":?run make .env}"), user.tag
    assert environment_of("loader")["CLICKHOUSE_LOADER_USER"] == "cinema_loader"
    assert environment_of("airflow-scheduler")["CLICKHOUSE_DBT_USER"] == "cinema_dbt"
    assert environment_of("metabase-init")["CLICKHOUSE_METABASE_USER"] == "cinema_metabase"


def test_clickhouse_grants_are_least_privilege() -> None:
    raw = template_default("CLICKHOUSE_DB")
    users = xml_users()

    assert grants(users["cinema_metabase"]) == ["GRANT SELECT ON cinema_marts.*"]
    assert users["cinema_metabase"].findtext("profile") == "cinema_read_only"
    assert USERS_XML.findtext("profiles/cinema_read_only/readonly") == "2"
    for query in grants(users["cinema_loader"]):
        assert query.endswith((f" ON {raw}.*", "POSTGRES ON *.*", "CREATE TEMPORARY TABLE ON *.*")), query
    assert f"GRANT SELECT ON {raw}.*" in grants(users["cinema_dbt"])
    assert not any("WITH GRANT OPTION" in query for user in users.values() for query in grants(user))


def test_clickhouse_parses_every_grant() -> None:
    """ClickHouse's own parser (chdb, in a child process) accepts each grant, given a grantee."""
    queries = [f"{query} TO probe" for user in xml_users().values() for query in grants(user)]
    assert len(queries) > 5
    assert syntax_errors(queries) == {}


def dockerfiles() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*Dockerfile*"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [PROJECT_ROOT / line for line in tracked.stdout.splitlines()]


def test_dockerfiles_pass_hadolint() -> None:
    paths = dockerfiles()
    assert {path.relative_to(PROJECT_ROOT).as_posix() for path in paths} >= {
        "loader/Dockerfile",
        "docker/airflow.Dockerfile",
    }
    hadolint = Path(sys.executable).with_name("hadolint")

    result = subprocess.run([hadolint, *paths], capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_images_copy_every_package_and_run_as_non_root() -> None:
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    include = re.search(r"^include = \[(.*)\]$", pyproject, flags=re.MULTILINE)
    assert include
    packages = [name.strip().strip('"').rstrip("*") for name in include.group(1).split(",")]
    for path in (PROJECT_ROOT / "loader" / "Dockerfile", PROJECT_ROOT / "docker" / "airflow.Dockerfile"):
        text = path.read_text()
        for folder in [*packages, "postgres_init", "dbt_project"]:
            assert re.search(rf"^COPY .*\b{folder}/ {folder}/$", text, flags=re.MULTILINE), f"{path}: {folder}"
        assert "--constraint constraints.txt --editable " in text, path
        last_user = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)[-1]
        assert last_user not in ("0", "root"), path
    assert ".env\n" in (PROJECT_ROOT / ".dockerignore").read_text()


def test_the_loader_healthcheck_asks_the_port_the_loader_listens_on() -> None:
    environment = environment_of("loader")
    probe = " ".join(SERVICES["loader"]["healthcheck"]["test"])

    assert environment["LOADER_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 (inside its container)
    assert f"http://127.0.0.1:{environment['LOADER_METRICS_PORT']}/healthz" in probe
    assert environment_of("airflow-scheduler")["LOADER_METRICS_HOST"] == "loader"


def readme_service_names() -> set[str]:
    """The services the README's "Services and networks" table names: the backticked names
    of each row's first cell, before any remark in parentheses."""
    section = README.split("### Services and networks", 1)[1].split("\n#", 1)[0]
    cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell.split("(", 1)[0])}


def test_the_readme_services_table_names_every_service_and_no_other() -> None:
    assert readme_service_names() == set(SERVICES)
