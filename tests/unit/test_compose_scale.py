"""docker-compose.scale.yaml, checked without a Docker engine.

The overlay is merged onto docker-compose.yaml the way `docker compose -f
docker-compose.yaml -f docker-compose.scale.yaml` merges them (Compose's merge rules,
`!override` and `extends`, as compose-go implements them), then held to the base file's
rules: the Compose Specification's schema, the network segmentation, pinned images,
healthchecks and start order, variables, settings and secrets per container. The
ClickHouse cluster's XML configuration is checked against the services that run it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from xml.etree import ElementTree

import pytest
import yaml

from cinema.paths import PROJECT_ROOT
from cinema.settings import marts_refresh_seconds_from_environment
from tests.unit.clickhouse_parser import syntax_errors
from tests.unit.compose_resolve import generated_dotenv, interpolated, resolved_environment
from tests.unit.test_compose_stack import (
    AIRFLOW_HEALTH,
    COMPOSE,
    MEMBERSHIP,
    NAMED_SUBNETS,
    ONE_SHOTS,
    SERVICES,
    TOOL_OPT_OUTS,
    compose_validator,
    environment_of,
    grants,
    networks_of,
    reaches,
    settings_read,
    template_default,
    template_variables,
    xml_users,
)

OVERLAY_FILE = PROJECT_ROOT / "docker-compose.scale.yaml"
OVERLAY_TEXT = OVERLAY_FILE.read_text()
CLUSTER_DIR = PROJECT_ROOT / "clickhouse" / "cluster"


# ---------------------------------------------------------------------------- merging


@dataclass(frozen=True)
class Override:
    """A value tagged `!override`: it replaces what it is merged onto instead of merging."""

    value: Any


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it, `!override` included."""


def _override(loader: ComposeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))  # type: ignore[arg-type]


ComposeLoader.add_constructor("!override", _override)


def load(path: Path) -> dict[str, Any]:
    configuration: dict[str, Any] = yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 (a SafeLoader)
    return configuration


def plain(value: Any) -> Any:
    """The value without its merge tags: what the file says on its own."""
    if isinstance(value, Override):
        return plain(value.value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def _as_mapping(value: Any, default: dict[str, Any] | None) -> dict[str, Any]:
    """The mapping form of `networks` or `depends_on` (a list names keys with default values)."""
    if isinstance(value, dict):
        return value
    return {name: None if default is None else dict(default) for name in value}


def _as_environment(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return dict(item.split("=", 1) if "=" in item else (item, None) for item in value)


def _volume_target(volume: Any) -> str:
    return str(volume["target"] if isinstance(volume, dict) else volume.split(":")[1])


def _replaced(_base: Any, override: Any, _path: tuple[str, ...]) -> Any:
    return plain(override)


def _keyed(default: dict[str, Any] | None) -> Any:
    """Merged as mappings; a list names the keys, each with `default`."""

    def merged(base: Any, override: Any, path: tuple[str, ...]) -> Any:
        return merge(_as_mapping(base, default), _as_mapping(override, default), (*path, "*"))

    return merged


def _environment(base: Any, override: Any, _path: tuple[str, ...]) -> Any:
    return {**_as_environment(base), **plain(_as_environment(override))}


def _volumes(base: Any, override: Any, _path: tuple[str, ...]) -> Any:
    # Unique by the path inside the container: the later mount wins.
    return list({_volume_target(volume): volume for volume in [*base, *plain(override)]}.values())


# A service attribute merged by its own rule (compose-go's override/merge.go, the parts
# these files use); everything else merges as mappings by key and sequences by appending.
SERVICE_ATTRIBUTE_RULES = {
    ("command",): _replaced,
    ("entrypoint",): _replaced,
    ("healthcheck", "test"): _replaced,
    ("networks",): _keyed(None),
    ("depends_on",): _keyed({"condition": "service_started", "required": True}),
    ("environment",): _environment,
    ("volumes",): _volumes,
}


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """`override` merged onto `base` by Compose's rules; neither is modified."""
    if isinstance(override, Override):
        return plain(override.value)
    if override is None:
        return base
    rule = SERVICE_ATTRIBUTE_RULES.get(path[2:]) if path[:1] == ("services",) else None
    if rule is not None:
        return rule(base, override, path)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value, (*path, key)) if key in base else plain(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return [*base, *plain(override)]
    return plain(override)


def with_extends_resolved(configuration: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Each `extends` replaced by the service it names, merged under the extending one."""
    services = {}
    for name, service in configuration["services"].items():
        services[name] = service
        if "extends" in service:
            reference = service["extends"]
            source = load(directory / reference["file"])["services"][reference["service"]]
            own = {key: value for key, value in service.items() if key != "extends"}
            services[name] = merge(source, own, ("services", name))
    return {**configuration, "services": services}


OVERLAY = load(OVERLAY_FILE)
MERGED: dict[str, Any] = merge(COMPOSE, with_extends_resolved(OVERLAY, PROJECT_ROOT))
MERGED_SERVICES: dict[str, dict[str, Any]] = MERGED["services"]
NEW_SERVICES = set(MERGED_SERVICES) - set(SERVICES)


def test_the_merge_follows_composes_rules():
    base = {
        "services": {
            "app": {
                "image": "app:1",
                "command": ["serve"],
                "environment": {"A": "1", "B": "2"},
                "networks": ["front"],
                "depends_on": {"db": {"condition": "service_healthy"}},
                "volumes": ["data:/data", "./conf:/conf:ro"],
                "healthcheck": {"test": ["CMD", "true"], "interval": "5s"},
                "dns": ["1.1.1.1"],
            }
        }
    }
    override = {
        "services": {
            "app": {
                "command": ["work"],
                "environment": ["B=3", "C=4"],
                "networks": {"back": {"aliases": ["api"]}},
                "depends_on": ["cache"],
                "volumes": ["other:/data"],
                "healthcheck": {"test": ["CMD", "false"]},
                "dns": ["8.8.8.8"],
                "ports": Override(["80:80"]),
            },
            "cache": {"image": "cache:1"},
        }
    }

    app = merge(base, override)["services"]["app"]

    assert app == {
        "image": "app:1",
        "command": ["work"],
        "environment": {"A": "1", "B": "3", "C": "4"},
        "networks": {"front": None, "back": {"aliases": ["api"]}},
        "depends_on": {
            "db": {"condition": "service_healthy"},
            "cache": {"condition": "service_started", "required": True},
        },
        "volumes": ["other:/data", "./conf:/conf:ro"],
        "healthcheck": {"test": ["CMD", "false"], "interval": "5s"},
        "dns": ["1.1.1.1", "8.8.8.8"],
        "ports": ["80:80"],
    }
    assert base["services"]["app"]["command"] == ["serve"], "the base is left as it was"
    assert merge({"a": [1]}, {"a": Override([2])}) == {"a": [2]}


# ---------------------------------------------------------------------------- schema, images, health


def test_the_overlay_and_the_merged_configuration_follow_the_compose_specification():
    validator = compose_validator()

    for configuration in (plain(OVERLAY), MERGED):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(configuration)]
        assert errors == []
    assert {*CLICKHOUSE_NODES, *KEEPERS, "redis", "airflow-worker"} - {"clickhouse"} == NEW_SERVICES


def test_every_new_service_is_pinned_long_running_and_healthchecked():
    for name in NEW_SERVICES:
        service = MERGED_SERVICES[name]
        image = service["image"]
        if "build" in service:
            assert image.endswith(":local"), name
        else:
            repository, _, tag = image.rpartition(":")
            assert repository and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert service["restart"] == "unless-stopped", name
        assert "ports" not in service, f"{name} publishes a port"
    assert MERGED_SERVICES["clickhouse-keeper-1"]["image"] == "clickhouse/clickhouse-keeper:26.8"
    assert MERGED_SERVICES["airflow-worker"]["deploy"]["replicas"] == 2


def test_depends_on_names_real_services_and_waits_on_what_they_offer():
    for name, service in MERGED_SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in MERGED_SERVICES, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in MERGED_SERVICES[dependency], f"{name} waits for {dependency}'s health"
            else:
                assert rule["condition"] == "service_completed_successfully", f"{name} -> {dependency}"
                assert dependency in ONE_SHOTS, f"{name} waits for long-running {dependency} to exit"
    # Servers after a Keeper quorum; whoever runs ON CLUSTER statements after every server.
    for node in CLICKHOUSE_NODES:
        assert set(MERGED_SERVICES[node]["depends_on"]) >= KEEPERS, node
    for name in ("loader", "airflow-worker"):
        assert set(MERGED_SERVICES[name]["depends_on"]) >= CLICKHOUSE_NODES, name
    assert "sleep" not in OVERLAY_TEXT


def test_every_overlay_variable_is_defined_in_env_template():
    code = "\n".join(line for line in OVERLAY_TEXT.splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", code))

    assert used - template_variables() == set()
    assert "CLICKHOUSE_CLUSTER_SECRET" in used


# ---------------------------------------------------------------------------- networks

CLICKHOUSE_NODES = {"clickhouse", "clickhouse-s1r2", "clickhouse-s2r1", "clickhouse-s2r2"}
KEEPERS = {"clickhouse-keeper-1", "clickhouse-keeper-2", "clickhouse-keeper-3"}
SCALE_MEMBERSHIP = {
    **MEMBERSHIP,
    "clickhouse": {"click_net", "metanet", "clickhouse_cluster"},
    **{node: {"clickhouse_cluster"} for node in CLICKHOUSE_NODES - {"clickhouse"}},
    **{keeper: {"clickhouse_cluster"} for keeper in KEEPERS},
    "redis": {"airflow_internal"},
    # The tasks moved: the workers sit where the scheduler sat, the scheduler with Airflow only.
    "airflow-worker": MEMBERSHIP["airflow-scheduler"],
    "airflow-scheduler": {"airflow_internal"},
}


def test_every_service_sits_exactly_on_its_networks():
    assert {name: networks_of(name, MERGED_SERVICES) for name in MERGED_SERVICES} == SCALE_MEMBERSHIP


def test_the_segmentation_of_the_original_still_holds():
    def on(network: str) -> set[str]:
        return {name for name in MERGED_SERVICES if network in networks_of(name, MERGED_SERVICES)}

    assert networks_of("postgres_publicist", MERGED_SERVICES).isdisjoint({"click_net", "metanet"})
    assert on("replication_network") == {"postgres_publicist", "postgres_subscription"}
    stores = {
        "postgres_publicist",
        "postgres_subscription",
        "airflow-postgres",
        "metabase-postgres",
        "redis",
        *CLICKHOUSE_NODES,
        *KEEPERS,
    }
    assert set(reaches("metabase", MERGED_SERVICES)) & stores == {"clickhouse", "metabase-postgres"}
    # The cluster's own traffic stays among its nodes, on a network with no way out; of
    # them, only `clickhouse` serves the rest of the stack.
    assert on("clickhouse_cluster") == CLICKHOUSE_NODES | KEEPERS
    assert MERGED["networks"]["clickhouse_cluster"] == {"internal": True}
    assert on("click_net") & (CLICKHOUSE_NODES | KEEPERS) == {"clickhouse"}
    assert set(reaches("airflow-scheduler", MERGED_SERVICES)) & stores == {"airflow-postgres", "redis"}


def test_the_networks_of_the_original_and_their_subnets_are_untouched():
    networks = MERGED["networks"]
    for name, definition in COMPOSE["networks"].items():
        assert networks[name] == definition, name
    for name, (variable, subnet) in NAMED_SUBNETS.items():
        assert networks[name]["ipam"]["config"] == [{"subnet": f"${{{variable}:-{subnet}}}"}], name


# ---------------------------------------------------------------------------- Airflow

CELERY_WORKER_COMMAND = ["celery", "worker"]
# apache-airflow-providers-celery's options (3.26.0; the provider is in the Airflow image,
# not in this virtualenv), the ones the overlay sets.
CELERY_OPTIONS = {"broker_url", "result_backend"}
# Read by the images, not by the project.
IMAGE_VARIABLES = {*TOOL_OPT_OUTS, "DUMB_INIT_SETSID"}


def test_every_airflow_component_runs_the_celery_executor_with_real_options():
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.origin is not None
    options = yaml.safe_load((Path(spec.origin).parent / "config_templates" / "config.yml").read_text())
    airflow = [name for name in MERGED_SERVICES if name.startswith("airflow-") and name != "airflow-postgres"]
    for name in airflow:
        environment = environment_of(name, MERGED_SERVICES)
        assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert environment["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET:?run make .env}", name  # noqa: S105
        for variable in environment:
            if variable.startswith("AIRFLOW__"):
                section, option = variable.removeprefix("AIRFLOW__").lower().split("__", 1)
                known = CELERY_OPTIONS if section == "celery" else options.get(section, {}).get("options", {})
                assert option in known, f"{name}: {variable} is no Airflow option"


def test_the_scheduler_only_schedules_and_the_workers_run_the_tasks():
    scheduler = MERGED_SERVICES["airflow-scheduler"]
    worker = MERGED_SERVICES["airflow-worker"]
    base = SERVICES["airflow-scheduler"]

    assert worker["command"] == CELERY_WORKER_COMMAND
    assert scheduler["command"] == base["command"]
    # The scheduler keeps nothing of the pipeline: no pipeline volume, no project setting but the
    # refresh DAG's cadence, which every Airflow component parsing the DAG file reads.
    assert {name for name in environment_of("airflow-scheduler", MERGED_SERVICES) if "AIRFLOW__" not in name} == (
        TOOL_OPT_OUTS | {"MARTS_REFRESH_SECONDS"}
    )
    assert not any("cinema-state" in str(volume) for volume in scheduler["volumes"])
    # The workers are the base file's scheduler: its image, volumes, start order and
    # every setting and secret, on the CeleryExecutor.
    for key in ("build", "image", "user", "volumes"):
        assert worker[key] == base[key], key
    assert set(worker["depends_on"]) >= set(base["depends_on"])
    assert environment_of("airflow-worker", MERGED_SERVICES) == {
        **environment_of("airflow-scheduler"),
        **environment_of("airflow-scheduler", MERGED_SERVICES),
        "CLICKHOUSE_CLUSTER": cluster_name(),
        "DUMB_INIT_SETSID": "0",
    }


def test_the_workers_are_probed_on_airflows_own_schedule():
    healthcheck = MERGED_SERVICES["airflow-worker"]["healthcheck"]

    assert {key: value for key, value in healthcheck.items() if key != "test"} == AIRFLOW_HEALTH
    assert "inspect ping" in " ".join(healthcheck["test"])


def test_the_broker_is_redis_on_airflows_own_network():
    for name in ("airflow-scheduler", "airflow-worker"):
        environment = environment_of(name, MERGED_SERVICES)
        assert environment["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert environment["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:"), name
        assert environment["AIRFLOW__CELERY__RESULT_BACKEND"].endswith("@airflow-postgres/airflow"), name
        assert "airflow_internal" in networks_of(name, MERGED_SERVICES) & networks_of("redis", MERGED_SERVICES)
    assert MERGED_SERVICES["redis"]["image"].startswith("redis:8.")


def test_containers_get_only_settings_the_project_reads_and_only_their_own_secrets():
    read, required = settings_read()
    withheld = {key for key, value in COMPOSE["x-withheld-postgres-secrets"].items() if value == ""}
    for name in ("loader", "metabase-init", "airflow-worker"):
        environment = environment_of(name, MERGED_SERVICES)
        project = {v for v in environment if not v.startswith(("AIRFLOW_", "_AIRFLOW")) and v not in IMAGE_VARIABLES}
        assert project - read == set(), name
        assert required <= set(environment), name
        empty = {v for v, value in environment.items() if value == ""} - {"AIRFLOW__CORE__FERNET_KEY"}
        assert empty <= withheld, name
        assert environment["CLICKHOUSE_HOST"] == "clickhouse", name

    def secrets(name: str, services: dict[str, dict[str, Any]]) -> set[str]:
        environment = environment_of(name, services)
        return {variable for variable, value in environment.items() if value and re.search("PASS|SECRET", variable)}

    assert secrets("airflow-worker", MERGED_SERVICES) == secrets("airflow-scheduler", SERVICES)
    assert secrets("airflow-scheduler", MERGED_SERVICES) == {
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
    }
    assert secrets("loader", MERGED_SERVICES) == secrets("loader", SERVICES)
    for name in ("loader", "airflow-worker"):
        assert environment_of(name, MERGED_SERVICES)["CLICKHOUSE_CLUSTER"] == cluster_name(), name
    assert "CLICKHOUSE_CLUSTER" not in environment_of("metabase-init", MERGED_SERVICES)


def test_the_restated_shapes_equal_the_base_files():
    assert OVERLAY["x-scale-health"] == COMPOSE["x-health"]
    assert OVERLAY["x-scale-airflow-env"] == {**COMPOSE["x-airflow-env"], "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    base = SERVICES["clickhouse"]
    for node in CLICKHOUSE_NODES:
        service = MERGED_SERVICES[node]
        for key in ("image", "ulimits", "healthcheck", "restart"):
            assert service[key] == base[key], f"{node}: {key}"
        assert environment_of(node, MERGED_SERVICES) == {
            **environment_of("clickhouse"),
            "CLICKHOUSE_CLUSTER_SECRET": "${CLICKHOUSE_CLUSTER_SECRET:?run make .env}",
        }, node


# ---------------------------------------------------------------------------- the ClickHouse cluster


def xml(path: Path) -> ElementTree.Element:
    return ElementTree.parse(path).getroot()  # noqa: S314 (ours)


def mounts(service: str) -> dict[str, str]:
    """Container path -> host path (or volume name) of a service's mounts."""
    found = {}
    for volume in MERGED_SERVICES[service].get("volumes", []):
        source, target = str(volume).split(":")[:2]
        found[target] = source
    return found


def mounted_file(service: str, target: str) -> Path:
    return PROJECT_ROOT / mounts(service)[target]


CLUSTER_CONFIG = xml(CLUSTER_DIR / "config.d" / "cluster.xml")


def cluster_name() -> str:
    (cluster,) = list(CLUSTER_CONFIG.iterfind("remote_servers/*"))
    return cluster.tag


def test_every_cluster_file_is_well_formed_xml_and_mounted():
    files = sorted(CLUSTER_DIR.rglob("*.xml"))
    mounted = {
        (PROJECT_ROOT / source).resolve()
        for service in MERGED_SERVICES
        for source in mounts(service).values()
        if source.startswith("./")
    }
    for path in files:
        assert xml(path).tag == "clickhouse", path
    assert set(files) <= mounted


def test_each_server_node_is_one_shard_replica_with_unique_macros():
    macros = {}
    for node in CLICKHOUSE_NODES:
        config = xml(mounted_file(node, "/etc/clickhouse-server/config.d/macros.xml"))
        macros[node] = (config.findtext("macros/shard"), config.findtext("macros/replica"))
        # Its replica name is the name the others reach it by.
        assert config.findtext("macros/replica") == node
        assert config.findtext("interserver_http_host") == node
        # The same cluster, users and first-start databases on every node.
        assert (
            mounted_file(node, "/etc/clickhouse-server/config.d/cluster.xml")
            == CLUSTER_DIR / "config.d" / "cluster.xml"
        )
        for target in ("/etc/clickhouse-server/users.d/cinema.xml", "/docker-entrypoint-initdb.d"):
            assert mounts(node)[target] == mounts("clickhouse")[target], (node, target)
        assert (
            mounted_file(node, "/etc/clickhouse-server/users.d/cluster.xml") == CLUSTER_DIR / "users.d" / "cluster.xml"
        )
    assert len(set(macros.values())) == len(CLICKHOUSE_NODES)
    assert macros["clickhouse"] == ("1", "clickhouse")
    # Each node keeps its own data.
    data = [mounts(node)["/var/lib/clickhouse"] for node in CLICKHOUSE_NODES]
    assert len(set(data)) == len(data) and all(not volume.startswith(".") for volume in data)


def test_the_cluster_lists_exactly_the_overlays_server_nodes_in_their_shards():
    shards = CLUSTER_CONFIG.findall(f"remote_servers/{cluster_name()}/shard")
    listed = {}
    for number, shard in enumerate(shards, start=1):
        assert shard.findtext("internal_replication") == "true"
        for replica in shard.iterfind("replica"):
            listed[replica.findtext("host")] = str(number)
            assert replica.findtext("port") == "9000"
    assert set(listed) == CLICKHOUSE_NODES
    for node, shard in listed.items():
        macros = xml(mounted_file(node, "/etc/clickhouse-server/config.d/macros.xml"))
        assert macros.findtext("macros/shard") == shard, node
    assert [len(shard.findall("replica")) for shard in shards] == [2, 2]


def test_the_nodes_share_a_secret_and_a_keeper_quorum():
    secret = CLUSTER_CONFIG.find(f"remote_servers/{cluster_name()}/secret")
    password = CLUSTER_CONFIG.find("interserver_http_credentials/password")
    assert secret is not None and password is not None
    for node in CLICKHOUSE_NODES:
        environment = environment_of(node, MERGED_SERVICES)
        assert secret.get("from_env") in environment and password.get("from_env") in environment, node

    keeper_config = xml(CLUSTER_DIR / "keeper.xml")
    port = keeper_config.findtext("keeper_server/tcp_port")
    assert {(node.findtext("host"), node.findtext("port")) for node in CLUSTER_CONFIG.iterfind("zookeeper/node")} == {
        (keeper, port) for keeper in KEEPERS
    }
    raft = {
        server.findtext("hostname"): server.findtext("id")
        for server in keeper_config.iterfind(".//raft_configuration/server")
    }
    assert set(raft) == KEEPERS
    server_id = keeper_config.find("keeper_server/server_id")
    assert server_id is not None
    for keeper in KEEPERS:
        environment = environment_of(keeper, MERGED_SERVICES)
        assert environment[server_id.get("from_env", "")] == raft[keeper], keeper
        assert mounted_file(keeper, environment["KEEPER_CONFIG"]) == CLUSTER_DIR / "keeper.xml"
    data = {mounts(keeper)["/var/lib/clickhouse"] for keeper in KEEPERS}
    assert len(data) == len(KEEPERS)
    assert keeper_config.findtext("keeper_server/log_storage_path", "").startswith("/var/lib/clickhouse/")


def test_the_cluster_grants_are_the_single_servers_plus_what_a_cluster_needs():
    users = xml_users()
    cluster_users = xml(CLUSTER_DIR / "users.d" / "cluster.xml").find("users")
    assert cluster_users is not None
    # users.d merges in name order: the cluster's file must come after cinema.xml to replace.
    for node in CLICKHOUSE_NODES:
        users_d = sorted(Path(target).name for target in mounts(node) if "/users.d/" in target)
        assert users_d == ["cinema.xml", "cluster.xml"], node

    assert {user.tag for user in cluster_users} == {"cinema_loader", "cinema_dbt"}
    for user in cluster_users:
        assert user.find("grants") is not None and user.find("grants").get("replace") == "replace"  # type: ignore[union-attr]
        assert grants(user) == [*grants(users[user.tag]), "GRANT CLUSTER, REMOTE ON *.*"], user.tag
    assert syntax_errors([f"{query} TO probe" for user in cluster_users for query in grants(user)]) == {}


@pytest.mark.parametrize("configuration", [COMPOSE, MERGED], ids=["docker-compose.yaml", "with the scale overlay"])
def test_every_airflow_component_gets_the_refresh_cadence_of_the_env_file(configuration, tmp_path):
    """The cinema_refresh DAG reads MARTS_REFRESH_SECONDS where it is parsed and scheduled:
    each Airflow container must start with the value .env gives, or the template's default."""
    dotenv = generated_dotenv(tmp_path)
    cases = ((dotenv, template_default("MARTS_REFRESH_SECONDS")), ({**dotenv, "MARTS_REFRESH_SECONDS": "15"}, "15"))
    for given, expected in cases:
        services = interpolated(configuration, given)["services"]
        airflow = [name for name, service in services.items() if "airflow" in str(service.get("image", ""))]
        assert {"airflow-scheduler", "airflow-dag-processor"} <= set(airflow)
        for name in airflow:
            environment = resolved_environment(services[name])
            assert environment.get("MARTS_REFRESH_SECONDS") == expected, name
            with mock.patch.dict(os.environ, environment, clear=True):
                assert marts_refresh_seconds_from_environment() == float(expected), name
