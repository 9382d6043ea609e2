"""A running `docker compose up -d` stack, checked from the host (`pytest --stack=compose`).

Only what Compose publishes by default is used: Airflow on 127.0.0.1:8080 and
Metabase on METABASE_URL (127.0.0.1:3000). Credentials come from the environment or
.env, as for `docker compose` itself. Without `--stack=compose`, or with no stack
answering, every test here is skipped with the reason. The marts exist only once a
`cinema_elt` run has built them (the DAG starts its first run when it is unpaused, at
`up`): the test that reads them waits for a successful run, fails if every run failed,
and skips, saying so, if none has been started or none finished in time.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from decouple import config

from cinema.settings import Settings, load_settings
from metabase.provision import MetabaseClient, load_definition

AIRFLOW_URL = "http://127.0.0.1:8080"
DAG_RUNS = f"{AIRFLOW_URL}/api/v2/dags/cinema_elt/dagRuns?order_by=-run_after&limit=20"
# A first run on a laptop: 100k events generated, loaded, transformed and checked.
FIRST_RUN_TIMEOUT_SECONDS = 1200.0
RUN_POLL_SECONDS = 15.0
UNFINISHED = {"queued", "running"}


def _get_json(url: str, token: str | None = None, body: object | None = None) -> Any:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (fixed loopback URL)
        return json.loads(response.read())


@pytest.fixture(scope="module")
def compose(request: pytest.FixtureRequest) -> Settings:
    if request.config.getoption("--stack") != "compose":
        pytest.skip("checks a running Docker Compose stack: run `docker compose up -d`, then pytest --stack=compose")
    settings = load_settings()
    for name, url in (
        ("Airflow", f"{AIRFLOW_URL}/api/v2/version"),
        ("Metabase", f"{settings.metabase.url}/api/health"),
    ):
        try:
            _get_json(url)
        except (urllib.error.URLError, OSError) as error:
            pytest.skip(f"--stack=compose, but no {name} answers at {url} ({error}): is `docker compose up -d` done?")
    return settings


def airflow_token() -> str:
    credentials = {
        "username": config("AIRFLOW_ADMIN_USERNAME", default="airflow"),
        "password": config("AIRFLOW_ADMIN_PASSWORD", default="airflow"),
    }
    token: str = _get_json(f"{AIRFLOW_URL}/auth/token", body=credentials)["access_token"]
    return token


def wait_for_a_successful_run(
    run_states: Callable[[], list[str]],
    timeout_seconds: float = FIRST_RUN_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once a cinema_elt run has succeeded; fail if every run failed; skip if none
    was started, or none finished within the timeout."""
    deadline = clock() + timeout_seconds
    while True:
        states = run_states()
        if "success" in states:
            return
        if not states:
            pytest.skip("no cinema_elt run yet, so no marts: trigger one in the Airflow UI (▶), then run again")
        if not UNFINISHED & set(states):
            pytest.fail(f"every cinema_elt run ended {sorted(set(states))}: see its task logs in the Airflow UI")
        if clock() >= deadline:
            pytest.skip(f"no cinema_elt run finished within {timeout_seconds:.0f}s (states {states}): run again later")
        sleep(RUN_POLL_SECONDS)


@pytest.fixture(scope="module")
def marts_built(compose: Settings) -> None:
    token = airflow_token()
    wait_for_a_successful_run(lambda: [run["state"] for run in _get_json(DAG_RUNS, token=token)["dag_runs"]])


@pytest.fixture(scope="module")
def metabase(compose: Settings) -> MetabaseClient:
    client = MetabaseClient(compose.metabase.url)
    answer = client.send(
        "POST", "/api/session", {"username": compose.metabase.admin_email, "password": compose.metabase.admin_password}
    )
    client.session = answer["id"]
    return client


def test_every_airflow_component_is_healthy(compose: Settings) -> None:
    health = _get_json(f"{AIRFLOW_URL}/api/v2/monitor/health")

    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", (component, health[component])


def test_the_dag_is_loaded_unpaused_with_the_original_login(compose: Settings) -> None:
    token = airflow_token()

    dag = _get_json(f"{AIRFLOW_URL}/api/v2/dags/cinema_elt", token=token)
    import_errors = _get_json(f"{AIRFLOW_URL}/api/v2/importErrors", token=token)

    assert dag["is_paused"] is False
    assert import_errors["total_entries"] == 0, import_errors


def test_metabase_opens_on_the_provisioned_dashboard(compose: Settings, metabase: MetabaseClient) -> None:
    definition = load_definition()
    properties = metabase.send("GET", "/api/session/properties")

    dashboard = metabase.send("GET", f"/api/dashboard/{properties['custom-homepage-dashboard']}")
    databases = metabase.send("GET", "/api/database")

    assert properties["custom-homepage"] is True
    assert dashboard["name"] == definition.dashboard_name
    assert sorted(card["card"]["name"] for card in dashboard["dashcards"]) == sorted(c.name for c in definition.cards)
    warehouse = [d for d in databases["data"] if d["name"] == definition.database_name]
    assert [d["engine"] for d in warehouse] == ["clickhouse"]


@pytest.mark.usefixtures("marts_built")
def test_metabase_reads_the_marts_through_its_read_only_user(compose: Settings, metabase: MetabaseClient) -> None:
    definition = load_definition()
    cards = {card["name"]: card["id"] for card in metabase.send("GET", "/api/card?f=all")}
    database = next(d for d in metabase.send("GET", "/api/database")["data"] if d["name"] == definition.database_name)

    # Metabase answers a failed query with its status, not an HTTP error.
    read = metabase.send("POST", f"/api/card/{cards['Daily watch hours']}/query")
    write = metabase.send(
        "POST",
        "/api/dataset",
        {
            "database": database["id"],
            "type": "native",
            "native": {"query": "CREATE TABLE cinema_marts.intruder (x UInt8) ENGINE = Memory"},
        },
    )

    assert read["status"] == "completed", read.get("error")
    assert [column["name"] for column in read["data"]["cols"]] == ["day", "watch_hours"]
    assert write["status"] == "failed"
    assert any(word in str(write.get("error")).lower() for word in ("readonly", "privileges")), write.get("error")
