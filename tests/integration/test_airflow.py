"""Real Airflow runs cinema_elt end to end on the embedded stack (`airflow dags test`)."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cinema import orchestrate, sandbox
from cinema.reconcile import reconcile
from cinema.report.command import default_output
from cinema.settings import Settings
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
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
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
    logical_date = latest_run(own.settings)[0]
    before = reconcile(own.settings)[0].actual
    result = subprocess.run(
        [
            orchestrate.AIRFLOW,
            "tasks",
            "test",
            orchestrate.DAG_ID,
            "generate_events",
            logical_date.isoformat(),
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


def private_to_its_owner(folder: Path) -> list[str]:
    """Everything under `folder` that its group or other users could read or enter."""
    return [
        f"{path} {stat.S_IMODE(path.lstat().st_mode):o}"
        for path in [folder, *folder.rglob("*")]
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    ]


def latest_run(settings: Settings) -> list[datetime]:
    """logical date, start, end, data interval start and end of the DAG's latest run."""
    home = Path(orchestrate.airflow_environment(settings)["AIRFLOW_HOME"])
    with sqlite3.connect(home / "airflow.db") as database:
        row = database.execute(
            "SELECT logical_date, start_date, end_date, data_interval_start, data_interval_end FROM dag_run "
            "WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
            (orchestrate.DAG_ID,),
        ).fetchone()
    return [datetime.fromisoformat(value).replace(tzinfo=UTC) for value in row]


def test_the_run_took_as_long_as_it_ran(dag_run):
    own, _ = dag_run
    logical, started, ended, interval_start, interval_end = latest_run(own.settings)
    assert timedelta(0) < ended - started < timedelta(minutes=10)
    # A run triggered now for the last whole day, as the UI's Trigger button makes one.
    assert started >= interval_end == logical.replace(hour=0, minute=0, second=0, microsecond=0)
    assert interval_end - interval_start == timedelta(days=1)


def test_airflow_home_is_private_to_its_owner(dag_run):
    own, _ = dag_run
    home = Path(orchestrate.airflow_environment(own.settings)["AIRFLOW_HOME"])
    assert (home / "airflow.db").is_file()
    assert private_to_its_owner(home) == []
    # astronomer-cosmos's dbt cache (the project's manifest, nothing private) is in the
    # state folder too, not in a /tmp every user shares and the first one owns.
    assert any((own.settings.state_dir / "cosmos").iterdir())


def descendants(pid: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, set()).add(int(proc.name))
    found, frontier = {pid}, [pid]
    while frontier:
        for child in children.get(frontier.pop(), set()) - found:
            found.add(child)
            frontier.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def listening_addresses(pids: set[int]) -> set[str]:
    """host:port of every TCP socket in LISTEN state that one of `pids` holds."""
    inodes = set()
    for pid in pids:
        try:
            inodes |= {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except OSError:
            continue
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in inodes:
                host, port = fields[1].split(":")
                loopback = {8: "0100007F", 32: "00000000000000000000000001000000"}[width]
                addresses.add(f"{'loopback' if host == loopback else host}:{int(port, 16)}")
    return addresses


def test_standalone_listens_on_loopback_only_and_keeps_its_password_private(stack, tmp_path):
    own = stack.with_warehouse(tmp_path / "warehouse")
    port = sandbox.free_port()
    home = tmp_path / "airflow"
    env = orchestrate.airflow_environment(own.settings) | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    with (tmp_path / "standalone.log").open("w") as output:
        process = subprocess.Popen(
            orchestrate.STANDALONE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            umask=orchestrate.PRIVATE,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "standalone.log").read_text()[-3000:]
            components = " ".join(command_line(pid) for pid in descendants(process.pid))
            if "triggerer" not in components or "scheduler" not in components:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as health:
                    return bool(health.status == 200)
            except OSError:
                return False

        deadline = time.monotonic() + 240
        while not ready():
            assert time.monotonic() < deadline, (tmp_path / "standalone.log").read_text()[-3000:]
            time.sleep(1)
        # The log servers, if any, start with their component: give them time to bind.
        time.sleep(10)
        addresses = listening_addresses(descendants(process.pid))
        assert f"loopback:{port}" in addresses
        assert {address.split(":")[0] for address in addresses} == {"loopback"}, addresses
        assert (home / "simple_auth_manager_passwords.json.generated").is_file()
        assert private_to_its_owner(home) == []
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
