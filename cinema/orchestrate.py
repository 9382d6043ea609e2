"""Airflow without Docker: the same DAG, a metadata database under the state folder.

`cinema demo` runs `cinema_elt` once with `airflow dags test` and reports each task as
it finishes; `cinema airflow` starts `airflow standalone` for the UI on 127.0.0.1:8080,
every listener on loopback (`cinema/airflow_standalone.py`). Airflow's processes run
with umask 077: its home holds the admin password, the metadata database and task logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from cinema.logs import private_log
from cinema.paths import DAGS, PROJECT_ROOT, executable
from cinema.settings import Settings, env_file_entries

DAG_ID = "cinema_elt"
AIRFLOW = executable("airflow")
STANDALONE = [sys.executable, "-m", "cinema.airflow_standalone"]
PRIVATE = 0o077


class StageFailed(RuntimeError):
    """A step of the demo or of starting Airflow failed; the message says which and where its log is."""


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Airflow's environment. The project's settings travel as environment variables,
    as in Docker Compose (task processes do not run in this directory); the process
    environment wins over .env, as for the settings themselves."""
    home = settings.state_dir / "airflow"
    return {
        **env_file_entries(settings),
        **os.environ,
        # Paths made absolute: a relative one would resolve in each task's own folder.
        "CINEMA_STATE_DIR": str(settings.state_dir),
        "CLICKHOUSE_CHDB_PATH": str(settings.warehouse.chdb_path),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # A task's `cinema` command logs its traceback: the task log is where one looks.
        "CINEMA_DEBUG": "1",
        # astronomer-cosmos caches dbt's project in the system temp folder by default:
        # shared by every user and checkout, so the second one cannot write it.
        "AIRFLOW__COSMOS__CACHE_DIR": str(settings.state_dir / "cosmos"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": "8080",
        # No usage telemetry leaves the machine (astronomer-cosmos reports DAG runs otherwise).
        "DO_NOT_TRACK": "1",
        # Tasks call `cinema ...`; it must resolve to this virtualenv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def migrate(settings: Settings) -> None:
    log = settings.state_dir / "logs" / "airflow-db-migrate.log"
    with private_log(log) as output:
        result = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            env=airflow_environment(settings),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            umask=PRIVATE,
            check=False,
        )
    if result.returncode != 0:
        raise StageFailed(f"`airflow db migrate` exited {result.returncode}; its output: {log}")


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    state: str
    seconds: float


_RUNNING = re.compile(r"\[DAG TEST\] running task <TaskInstance: " + DAG_ID + r"\.(\S+) ")
_STATE = re.compile(r"Task instance state updated.*new_state=(\w+)")


def _follow(lines: Iterator[str], log: Path, on_task: Callable[[TaskOutcome], None]) -> None:
    """Turn `airflow dags test` output into one line per task; keep the full log on disk."""
    current: tuple[str, float] | None = None
    with private_log(log) as handle:
        for line in lines:
            handle.write(line)
            if match := _RUNNING.search(line):
                current = (match.group(1), time.monotonic())
            elif (match := _STATE.search(line)) and current is not None:
                on_task(TaskOutcome(current[0], match.group(1), time.monotonic() - current[1]))
                current = None


def dag_test(settings: Settings, conf: dict[str, object], on_task: Callable[[TaskOutcome], None]) -> bool:
    """Run the DAG once in-process (`airflow dags test`); True if the run succeeded.

    Its logical date is now, as for a run triggered in the UI: `dags test` records a
    run's start as its logical date, so midnight showed a run of hours. The data
    interval is the same either way, yesterday (the timetable's last whole day)."""
    log = settings.state_dir / "logs" / "airflow-dags-test.log"
    process = subprocess.Popen(
        [AIRFLOW, "dags", "test", DAG_ID, datetime.now(UTC).isoformat(), "--conf", json.dumps(conf)],
        env=airflow_environment(settings),
        cwd=PROJECT_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        umask=PRIVATE,
    )
    assert process.stdout is not None
    _follow(iter(process.stdout), log, on_task)
    return process.wait() == 0


def standalone(settings: Settings) -> int:
    """`airflow standalone` on 127.0.0.1:8080 against the embedded stack; returns its exit code."""
    return subprocess.run(
        STANDALONE, env=airflow_environment(settings), cwd=PROJECT_ROOT, umask=PRIVATE, check=False
    ).returncode


def parse_dbt_project(settings: Settings) -> None:
    """Write dbt_project/target/manifest.json, from which the DAG renders its dbt tasks."""
    from cinema.transform import run_dbt

    if run_dbt(settings, ["--quiet", "parse"]) != 0:
        raise click.ClickException("dbt could not parse dbt_project/; run `cinema dbt parse` to see why")


def _print_marts_summary(settings: Settings) -> None:
    from cinema.console import print_table
    from cinema.report.marts import open_marts, read_marts

    client = open_marts(settings)
    try:
        marts = read_marts(client)
    finally:
        client.close()
    totals = marts.totals
    print_table(
        "The marts (cinema_marts)",
        ("measure", "value"),
        [
            ("sessions", f"{totals.sessions:,}"),
            ("viewers", f"{totals.viewers:,}"),
            ("watch hours", f"{totals.watch_hours:,.0f}"),
            ("completion rate", f"{totals.completion_rate:.1%}"),
            ("average session", f"{totals.avg_session_minutes:.0f} min"),
            ("events between", f"{totals.first_event:%Y-%m-%d %H:%M} and {totals.last_event:%Y-%m-%d %H:%M} UTC"),
        ],
    )
    print_table(
        "Most watched films",
        ("film", "sessions", "watch hours", "completion rate"),
        [
            (m.title, f"{m.sessions:,}", f"{m.watch_hours:,.0f}", f"{m.completion_rate:.1%}")
            for m in marts.top_movies[:5]
        ],
    )
    print_table(
        "Daily viewing (latest days)",
        ("day", "active viewers", "sessions", "watch hours"),
        [
            (f"{d.day:%a %Y-%m-%d}", f"{d.active_viewers:,}", f"{d.sessions:,}", f"{d.watch_hours:,.0f}")
            for d in marts.days[-5:]
        ],
    )


@click.command("demo")
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Events the DAG generates for its day.",
)
def demo(events: int) -> None:
    """The main job: the embedded stack, then Airflow runs cinema_elt once; prints the marts."""
    from cinema import stack as embedded
    from cinema.cli import describe_failure
    from cinema.console import console, print_table
    from cinema.context import settings_from_context
    from cinema.reconcile import reconcile

    settings = settings_from_context()
    began = time.monotonic()

    def stage(title: str, action: Callable[[], object]) -> None:
        started = time.monotonic()
        try:
            with console.status(title):
                action()
        except Exception as error:
            raise StageFailed(f"{title}: {describe_failure(error, settings)}") from error
        console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f}s)[/dim]")

    stage("PostgreSQL 18 publisher and subscriber, logical replication", lambda: embedded.up(settings))
    stage("dbt manifest for Airflow's task group", lambda: parse_dbt_project(settings))
    stage("Airflow metadata database", lambda: migrate(settings))

    console.print(f"Airflow runs [bold]{DAG_ID}[/bold] once (airflow dags test), {events:,} events for yesterday:")

    failed: list[str] = []

    def on_task(outcome: TaskOutcome) -> None:
        mark = {"success": "[green]✓[/green]", "failed": "[red]✗[/red]"}.get(outcome.state, "[yellow]↻[/yellow]")
        console.print(f"  {mark} {outcome.task_id} [dim]{outcome.state}, {outcome.seconds:.1f}s[/dim]")
        if outcome.state == "failed":
            failed.append(outcome.task_id)

    if not dag_test(settings, {"events": events}, on_task):
        log = settings.state_dir / "logs" / "airflow-dags-test.log"
        at = f" at {', '.join(failed)}" if failed else ""
        raise StageFailed(f"the DAG run failed{at}; Airflow's full output: {log}")

    checks = reconcile(settings)
    print_table(
        "Every stage holds the same events",
        ("check", "rows", "result"),
        [(c.name, f"{c.actual:,}", "ok" if c.ok else f"MISMATCH (expected {c.expected:,})") for c in checks],
    )
    _print_marts_summary(settings)
    from cinema.report.command import default_output

    console.print(f"Report: [bold]{default_output(settings)}[/bold]")
    console.print(
        f"Done in {time.monotonic() - began:.0f}s. Next: `make airflow` for the UI at http://127.0.0.1:8080, "
        "`.venv/bin/cinema --help` for every command."
    )


@click.command("airflow")
def airflow() -> None:
    """Airflow's UI on http://127.0.0.1:8080 against the embedded stack (`airflow standalone`)."""
    from cinema import stack as embedded
    from cinema.context import settings_from_context

    settings = settings_from_context()
    embedded.up(settings)
    parse_dbt_project(settings)
    migrate(settings)
    sys.exit(standalone(settings))
