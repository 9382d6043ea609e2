"""A postmaster killed with -9 whose parent never reaps it stays a zombie: `kill -0` still
succeeds on its pid, but nothing listens. `cinema stack up` must not count it as running.

The stand-in postmaster is this test's own child, an executable named `postgres` (a copy
of `sleep`), killed and deliberately not reaped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cinema.stack import ServerFiles, is_running


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def process_state(pid: int) -> str:
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_zombie_postmaster_does_not_count_as_running(tmp_path):
    binary = tmp_path / "postgres"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    files = ServerFiles(tmp_path / "data", tmp_path / "sockets", tmp_path / "server.log")
    files.data_dir.mkdir()
    postmaster = subprocess.Popen([str(binary), "60"])
    try:
        (files.data_dir / "postmaster.pid").write_text(f"{postmaster.pid}\n{files.data_dir}\n")
        wait_for(lambda: (Path("/proc") / str(postmaster.pid) / "comm").read_text().strip() == "postgres", "exec")
        assert is_running(files)

        postmaster.kill()
        wait_for(lambda: process_state(postmaster.pid) == "Z", "the killed postmaster to become a zombie")
        os.kill(postmaster.pid, 0)  # the zombie's pid still answers, as pg_ctl status would see it

        assert not is_running(files)
    finally:
        postmaster.kill()
        postmaster.wait()
    assert not is_running(files)
