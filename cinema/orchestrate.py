"""Airflow without Docker: the same DAG, a metadata database under the state folder.

`cinema demo` runs `cinema_elt` once with `airflow dags test` and reports each task as
it finishes; `cinema airflow` starts `airflow standalone` for the UI on 127.0.0.1:8080.
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

from cinema.paths import DAGS, PROJECT_ROOT
from cinema.settings import Settings

DAG_ID = "cinema_elt"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_environment(settings: Settings) -> dict[str, str]:
    home = settings.state_dir / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": "8080",
        # Tasks call `cinema ...`; it must resolve to this virtualenv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _environment(settings: Settings) -> dict[str, str]:
    return {**os.environ, **airflow_environment(settings)}


def migrate(settings: Settings) -> None:
    result = subprocess.run(
        [AIRFLOW, "db", "migrate"],
        env=_environment(settings),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


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
    with log.open("w") as handle:
        for line in lines:
            handle.write(line)
            if match := _RUNNING.search(line):
                current = (match.group(1), time.monotonic())
            elif (match := _STATE.search(line)) and current is not None:
                on_task(TaskOutcome(current[0], match.group(1), time.monotonic() - current[1]))
                current = None


def dag_test(
    settings: Settings, conf: dict[str, object], on_task: Callable[[TaskOutcome], None], logical_date: datetime
) -> bool:
    """Run the DAG once in-process (`airflow dags test`); True if the run succeeded."""
    log = settings.state_dir / "logs" / "airflow-dags-test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [AIRFLOW, "dags", "test", DAG_ID, logical_date.isoformat(), "--conf", json.dumps(conf)],
        env=_environment(settings),
        cwd=PROJECT_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    _follow(iter(process.stdout), log, on_task)
    return process.wait() == 0


def standalone(settings: Settings) -> int:
    """`airflow standalone` on 127.0.0.1:8080 against the embedded stack; returns its exit code."""
    return subprocess.run([AIRFLOW, "standalone"], env=_environment(settings), cwd=PROJECT_ROOT, check=False).returncode


def today_midnight() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
