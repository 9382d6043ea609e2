"""Real Airflow runs cinema_elt end to end on the embedded stack (`airflow dags test`)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, timedelta

import pytest

from cinema import orchestrate
from cinema.reconcile import reconcile
from cinema.report import default_output
from cinema.warehouse import warehouse_client

pytestmark = pytest.mark.integration
EVENTS = 20_000


@pytest.fixture(scope="module")
def dag_run(stack, tmp_path_factory):
    """One DAG run into a warehouse of its own; the outcome of every task."""
    own = stack.with_warehouse(tmp_path_factory.mktemp("airflow") / "warehouse")
    outcomes: list[orchestrate.TaskOutcome] = []
    with pytest.MonkeyPatch.context() as patch:
        for name, value in own.env.items():
            patch.setenv(name, value)
        orchestrate.parse_dbt_project(own.settings)
        orchestrate.migrate(own.settings)
        succeeded = orchestrate.dag_test(own.settings, {"events": EVENTS, "dirty_rate": 0.05}, outcomes.append)
    log = own.settings.state_dir / "logs" / "airflow-dags-test.log"
    assert succeeded, f"the DAG run failed; see {log}\n" + log.read_text()[-4000:]
    return own, outcomes


def test_every_task_succeeded_in_order(dag_run):
    _, outcomes = dag_run
    finished = [outcome.task_id for outcome in outcomes if outcome.state == "success"]
    assert finished[:4] == ["generate_events", "publisher_position", "wait_for_subscriber", "load_warehouse"]
    assert finished[-2:] == ["reconcile", "report"]
    assert "transform.viewing_sessions.run" in finished
    assert finished.index("transform.viewing_sessions.run") < finished.index("transform.viewing_sessions.test")
    assert all(outcome.state == "success" for outcome in outcomes)


def test_counts_reconcile_from_publisher_to_marts(dag_run):
    own, _ = dag_run
    checks = reconcile(own.settings)
    assert all(check.ok for check in checks), checks
    assert checks[0].actual >= EVENTS


def test_the_marts_hold_yesterdays_events(dag_run):
    own, _ = dag_run
    with warehouse_client(own.settings) as client:
        sessions, first, last = client.query(
            "SELECT count(), min(started_at), max(ended_at) FROM cinema_marts.viewing_sessions"
        ).result_rows[0]
        days = client.query("SELECT count() FROM cinema_marts.daily_viewing WHERE watch_hours > 0").result_rows[0][0]
        heat = client.query("SELECT count() FROM cinema_marts.viewing_heatmap").result_rows[0][0]
    today = orchestrate.today_midnight()
    assert sessions > 50
    assert today - timedelta(days=1) <= first.replace(tzinfo=UTC)
    assert last.replace(tzinfo=UTC) < today
    assert days == 1
    assert heat == 7 * 24


def test_the_report_was_written(dag_run):
    own, _ = dag_run
    page = default_output(own.settings)
    assert page.is_file()
    assert "Viewing report" in page.read_text()
    assert os.path.getsize(page) > 10_000


def test_rerunning_the_days_generation_adds_no_events(dag_run):
    own, _ = dag_run
    before = reconcile(own.settings)[0].actual
    result = subprocess.run(
        [
            orchestrate.AIRFLOW,
            "tasks",
            "test",
            orchestrate.DAG_ID,
            "generate_events",
            orchestrate.today_midnight().isoformat(),
        ],
        env=orchestrate.airflow_environment(own.settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 events written" in result.stdout
    assert reconcile(own.settings)[0].actual == before
