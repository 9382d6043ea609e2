"""CPU time per part of the pipeline, read from /proc while a rate is held.

A process's utime + stime (/proc/<pid>/stat, every thread included) at the start and
the end of a span, per component: the processes the bench started (producer, loader)
by pid, and each PostgreSQL server's children by their process title (walsender,
apply workers, the backends of each role). CPU seconds over wall seconds are the
cores a component kept busy; what the machine was busy with beyond them (/proc/stat)
is `elsewhere`: this bench's own polling, processes that lived shorter than the span,
and whatever else shares the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cinema.settings import Settings
from cinema.stack import ServerFiles, postmaster_pid

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
ELSEWHERE = "elsewhere"
MACHINE = "machine"
# (server, what its process title starts with after "postgres: ", component); first match wins.
TITLES = (
    ("publisher", "walsender", "publisher_walsender"),
    ("publisher", "cinema_producer", "publisher_backends"),
    ("subscriber", "logical replication", "subscriber_apply"),
    ("subscriber", "cinema_loader", "subscriber_backends"),
)


def process_seconds(pid: int) -> float | None:
    """CPU seconds `pid` has used (all its threads), None once it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 3 of proc(5), utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent on anything but idling and waiting for I/O."""
    values = [int(value) for value in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = values[3], values[4]
    return (sum(values[:8]) - idle - iowait) / TICKS_PER_SECOND


def _children(parent: int) -> list[tuple[int, str]]:
    found = []
    for proc in PROC.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append((int(proc.name), title))
    return found


def component_of(server: str, title: str) -> str:
    """The component a PostgreSQL process of `server` belongs to, from its title."""
    what = title.removeprefix("postgres: ")
    return next(
        (component for side, prefix, component in TITLES if side == server and what.startswith(prefix)),
        f"{server}_other",
    )


def stack_processes(settings: Settings, named: Mapping[str, int]) -> dict[int, str]:
    """pid -> component: the `named` processes and every child of both PostgreSQL servers."""
    processes = {pid: component for component, pid in named.items()}
    for server in (settings.publisher, settings.subscriber):
        postmaster = postmaster_pid(ServerFiles.of(settings, server))
        if postmaster is not None:
            processes |= {pid: component_of(server.name, title) for pid, title in _children(postmaster)}
    return processes


@dataclass(frozen=True)
class Sample:
    at: float
    machine: float
    # pid -> (component, CPU seconds so far)
    processes: dict[int, tuple[str, float]]


def sample(processes: Callable[[], dict[int, str]]) -> Sample:
    seconds = {pid: (component, process_seconds(pid)) for pid, component in processes().items()}
    return Sample(
        time.monotonic(),
        machine_busy_seconds(),
        {pid: (component, used) for pid, (component, used) in seconds.items() if used is not None},
    )


def cores(first: Sample, last: Sample) -> dict[str, float]:
    """Cores each component kept busy between two samples; a process that began after
    `first` counts from zero, one gone by `last` is left to `elsewhere`."""
    wall = last.at - first.at
    used: dict[str, float] = {}
    for pid, (component, seconds) in last.processes.items():
        before = first.processes.get(pid, (component, 0.0))[1]
        used[component] = used.get(component, 0.0) + seconds - before
    busy = last.machine - first.machine
    result = {component: value / wall for component, value in sorted(used.items())}
    result[ELSEWHERE] = max(0.0, busy - sum(used.values())) / wall
    result[MACHINE] = busy / wall
    return result
