"""The DAG folder imports cleanly, does no I/O at import, and the DAG is built as intended.

Airflow reads its configuration when first imported, so the DagBag is loaded in a
fresh interpreter with its own AIRFLOW_HOME; that interpreter also refuses every
network connection and subprocess while the DAG file is imported (the DAG's own
code and the task group astronomer-cosmos renders from dbt's manifest) and
reports any attempt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cinema import sandbox
from cinema.paths import DAGS, DBT_PROJECT, PROJECT_ROOT, executable
from cinema.settings import MARTS_REFRESH_SECONDS_DEFAULT

CINEMA = executable("cinema")

PROBE = r"""
import json, socket, subprocess, sys

# The libraries the DAG builds on are imported first: what they do when imported
# (croniter runs `file` to learn the word size) is theirs, not the DAG's.
import airflow.sdk, cosmos
from airflow.dag_processing.dagbag import DagBag

attempts = []

def refuse(kind):
    def blocked(*args, **kwargs):
        attempts.append(f"{kind}: {args[1:2] or args[:1]}")
        raise OSError(f"{kind} during DAG import")
    return blocked

socket.socket.connect = refuse("socket connect")
socket.create_connection = refuse("socket create_connection")
subprocess.Popen.__init__ = refuse("subprocess")

bag = DagBag(dag_folder=sys.argv[1])
errors = {str(path): str(error) for path, error in bag.import_errors.items()}
report = {"import_errors": errors, "io": attempts, "dags": sorted(bag.dags)}

def describe(dag):
    return {
        "tags": sorted(dag.tags),
        "catchup": dag.catchup,
        "start_date_tz": str(dag.start_date.tzinfo) if dag.start_date else None,
        "doc_md": dag.doc_md or "",
        "max_active_runs": dag.max_active_runs,
        "paused_at_creation": dag.is_paused_upon_creation,
        "timetable": type(dag.timetable).__name__,
        "every_seconds": getattr(dag.timetable, "delta", None) and dag.timetable.delta.total_seconds(),
        "tasks": {
            t.task_id: {
                "retries": t.retries,
                "retry_exponential_backoff": t.retry_exponential_backoff,
                "sensor_timeout_seconds": getattr(t, "timeout", None),
                "upstream": sorted(t.upstream_task_ids),
                "pool": t.pool,
            }
            for t in dag.tasks
        },
    }

if (dag := bag.dags.get("cinema_elt")) is not None:
    report |= describe(dag)
report["others"] = {dag_id: describe(dag) for dag_id, dag in bag.dags.items() if dag_id != "cinema_elt"}
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def dag_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow-home")
    environment = {
        **sandbox.environment(home),
        "PATH": str(Path(sys.executable).parent),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DO_NOT_TRACK": "1",
    }
    # The DAG renders its dbt task group from dbt's manifest (parsing connects to nothing).
    subprocess.run(
        [CINEMA, "dbt", "--quiet", "parse"], env=environment, cwd=home, check=True, capture_output=True, timeout=300
    )
    assert (DBT_PROJECT / "target" / "manifest.json").is_file()
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS)],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"the DagBag probe printed no report:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("REPORT "))
    return report


def test_the_dag_folder_imports_without_errors(dag_report):
    assert dag_report["import_errors"] == {}
    # Every DAG file in dags/ is in the bag the tests below inspect.
    files = sorted(path.stem for path in DAGS.glob("*.py"))
    assert dag_report["dags"] == files == ["cinema_elt", "cinema_refresh"]


def test_importing_the_dags_does_no_io(dag_report):
    assert dag_report["io"] == []


def test_the_dag_is_configured_as_a_production_dag(dag_report):
    assert dag_report["catchup"] is False
    assert dag_report["start_date_tz"] == "UTC"
    assert dag_report["paused_at_creation"] is False
    assert dag_report["max_active_runs"] == 1
    assert dag_report["timetable"] == "CronDataIntervalTimetable"
    assert {"cinema", "elt", "dbt"} <= set(dag_report["tags"])
    assert "generate_events" in dag_report["doc_md"]
    assert all(task["retries"] >= 2 for task in dag_report["tasks"].values())
    # README, "Airflow": two retries with exponential backoff on every task; the sensor times out after 15 minutes.
    assert all(task["retry_exponential_backoff"] is True for task in dag_report["tasks"].values())
    assert dag_report["tasks"]["wait_for_subscriber"]["sensor_timeout_seconds"] == 900


def test_every_dbt_node_is_a_task_followed_by_its_tests(dag_report):
    manifest = json.loads((DBT_PROJECT / "target" / "manifest.json").read_text())
    models = {node["name"] for node in manifest["nodes"].values() if node["resource_type"] == "model"}
    seeds = {node["name"] for node in manifest["nodes"].values() if node["resource_type"] == "seed"}
    tasks = dag_report["tasks"]
    assert {"viewing_sessions", "daily_viewing", "movie_performance"} <= models
    for model in models:
        assert f"transform.{model}.run" in tasks
        assert tasks[f"transform.{model}.test"]["upstream"] == [f"transform.{model}.run"]
    for seed in seeds:
        assert f"transform.{seed}.seed" in tasks


def test_the_pipeline_runs_in_order(dag_report):
    tasks = dag_report["tasks"]
    assert tasks["publisher_position"]["upstream"] == ["generate_events"]
    assert tasks["wait_for_subscriber"]["upstream"] == ["publisher_position"]
    assert tasks["load_warehouse"]["upstream"] == ["wait_for_subscriber"]
    first_dbt = [task for task, spec in tasks.items() if spec["upstream"] == ["load_warehouse"]]
    assert first_dbt
    assert all(task.startswith("transform.") for task in first_dbt)
    assert all(spec["upstream"] for task, spec in tasks.items() if task.startswith("transform."))
    assert tasks["report"]["upstream"] == ["reconcile"]
    assert all(upstream.startswith("transform.") for upstream in tasks["reconcile"]["upstream"])


def test_the_refresh_dag_runs_on_the_cadence_and_never_overlaps_itself(dag_report):
    refresh = dag_report["others"]["cinema_refresh"]
    assert refresh["catchup"] is False
    assert refresh["start_date_tz"] == "UTC"
    assert refresh["max_active_runs"] == 1
    assert refresh["paused_at_creation"] is False
    # MARTS_REFRESH_SECONDS' default, the probe's environment not setting it.
    assert refresh["timetable"] == "DeltaTriggerTimetable"
    assert refresh["every_seconds"] == MARTS_REFRESH_SECONDS_DEFAULT == 30
    assert "refresh_marts" in refresh["doc_md"]
    assert {"cinema", "live"} <= set(refresh["tags"])
    assert refresh["tasks"]["refresh_marts"]["upstream"] == ["load_warehouse"]
    assert all(task["retries"] >= 2 for task in refresh["tasks"].values())
