"""`python -m bench`: measure every stage on a fresh embedded stack, print a table, write build/bench.json.

Each figure is measured in the same run as its reference (the producer beside a raw
COPY of the same rows, the loader beside ClickHouse pulling the same rows itself), so
ratios hold even when this shared machine's speed drifts. Sizes are options: the
defaults finish in a few minutes; `--full` uses the sizes the issues quote.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cinema import sandbox
from cinema import stack as embedded
from cinema.console import print_table
from cinema.settings import Settings, load_settings

CINEMA = str(Path(sys.executable).with_name("cinema"))


@dataclass(frozen=True)
class Sizes:
    producer_events: int
    replication_events: int


QUICK = Sizes(producer_events=200_000, replication_events=200_000)
FULL = Sizes(producer_events=1_000_000, replication_events=1_000_000)


def _runner(environment: dict[str, str], workdir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def cinema(*args: str, environment_overrides: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CINEMA, *args],
            env={**environment, **(environment_overrides or {})},
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"cinema {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return cinema


def _sections(sizes: Sizes) -> list[tuple[str, Callable[[Settings, Any], dict[str, float]]]]:
    from bench import producer, replication

    return [
        ("producer", lambda settings, cinema: producer.run(settings, cinema, sizes.producer_events)),
        ("replication", lambda settings, cinema: replication.run(settings, cinema, sizes.replication_events)),
    ]


@click.command()
@click.option("--full", is_flag=True, help="The sizes the issues quote (1M events; takes much longer).")
@click.option("--output", type=click.Path(path_type=Path), default=Path("build/bench.json"), show_default=True)
def main(full: bool, output: Path) -> None:
    sizes = FULL if full else QUICK
    state_dir = sandbox.new_state_dir("cinema-bench-")
    environment = sandbox.environment(state_dir)
    workdir = state_dir / "work"
    workdir.mkdir()
    os.environ.update(environment)
    settings = load_settings(env_file=workdir / ".env")
    figures: dict[str, dict[str, float]] = {}
    began = time.monotonic()
    try:
        embedded.up(settings)
        cinema = _runner({**os.environ, **environment}, workdir)
        for name, measure in _sections(sizes):
            click.echo(f"bench: {name} ...", err=True)
            figures[name] = measure(settings, cinema)
    finally:
        embedded.down(settings, purge=True)
        shutil.rmtree(state_dir, ignore_errors=True)
    rows = [(section, name, f"{value:,.2f}") for section, values in figures.items() for name, value in values.items()]
    print_table(f"bench ({'full' if full else 'quick'} sizes)", ("stage", "figure", "value"), rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "sizes": sizes.__dict__,
                "seconds": round(time.monotonic() - began, 1),
                "figures": figures,
            },
            indent=2,
        )
    )
    click.echo(f"bench: wrote {output}", err=True)


if __name__ == "__main__":
    main()
