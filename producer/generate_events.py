"""Generate realistic viewing events into the publisher (`cinema generate`).

Backfill (default): exactly `--events` rows, all within [--start, --end) like a
data interval (sessions still playing at --end are cut there), written as fast as
the publisher takes them by `--writers` concurrent transactions. Live (`--rate`): a steady stream at about `--rate`
events per second for `--duration` seconds (or, with `--service`, until stopped), each
event written when it happens.

The same options with the same `--seed` give the same rows. A backfill is
idempotent: its chunks are recorded on the publisher, so running it again (or
after a crash) writes only what is missing. The ground truth of every finished
session goes to a CSV file for the marts to be checked against.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count, islice
from pathlib import Path

import click

from cinema import db
from cinema.settings import Settings
from producer.behaviour import Behaviour
from producer.binary_copy import copy_binary
from producer.catalog import Movie, User, load_movies, make_users
from producer.ground_truth import GroundTruthWriter
from producer.stream import Row, World, backfill_stream
from producer.writer import Chunk, ChunkWriters, committed_chunks, ensure_reference_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    seed: int
    users: int
    writers: int
    chunk_size: int
    dirty_rate: float
    behaviour: Behaviour

    def key(self, *parts: object) -> str:
        text = "|".join(map(str, (self.seed, self.users, self.dirty_rate, self.behaviour, *parts)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Outcome:
    run_key: str
    rows_written: int
    chunks_skipped: int
    sessions_finished: int
    seconds: float
    ground_truth: Path


def chunks(rows: Iterator[Row], size: int, done: set[int]) -> Iterator[Chunk]:
    """Consecutive slices of `size` rows, packed for COPY as they are made; a chunk already
    committed is generated all the same (the stream must pass it) but not packed."""
    for number in count():
        if number in done:
            skipped = sum(1 for _ in islice(rows, size))
            if not skipped:
                return
            yield Chunk(number, skipped, b"")
            continue
        made, data = copy_binary(islice(rows, size))
        if not made:
            return
        yield Chunk(number, made, data)


def _prepare_publisher(settings: Settings, users: Sequence[User], movies: Sequence[Movie], run_key: str) -> set[int]:
    """Reference data in place; the chunks of `run_key` already committed."""
    with db.closing(db.producer(settings)) as connection:
        ensure_reference_data(connection, users, movies)
        return committed_chunks(connection, run_key)


@contextmanager
def _progress_bar(total: int, shown: bool) -> Iterator[Callable[[int], None]]:
    """`advance(rows)` of a progress bar on a terminal; rich is imported only to show one."""
    if not shown:
        yield lambda _rows: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("events"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task("events", total=total)
        yield lambda rows: bar.advance(task, rows)


def backfill(
    settings: Settings,
    generation: Generation,
    events: int,
    start: datetime,
    end: datetime,
    *,
    run_key: str | None = None,
    show_progress: bool = False,
) -> Outcome:
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    run_key = run_key or generation.key("backfill", events, start_ms, end_ms, generation.chunk_size)
    users = make_users(generation.users)
    world = World(users, load_movies())
    truth_path = settings.ground_truth_dir / f"{run_key}.csv"
    with GroundTruthWriter(truth_path) as truth, ThreadPoolExecutor(1) as pool:
        # The publisher takes the reference data while the stream's pilot simulation runs.
        prepared = pool.submit(_prepare_publisher, settings, users, world.movies, run_key)
        stream = backfill_stream(
            generation.seed, world, generation.behaviour, generation.dirty_rate, events, start_ms, end_ms, truth
        )
        done = prepared.result()
        began = time.monotonic()
        writers = ChunkWriters(lambda: db.producer(settings), run_key, generation.writers)
        try:
            with _progress_bar(events, show_progress) as advance:
                for chunk in chunks(stream, generation.chunk_size, done):
                    if chunk.number not in done:
                        writers.submit(chunk)
                    advance(chunk.rows)
        finally:
            writers.close()
    return Outcome(
        run_key,
        writers.rows_written,
        writers.chunks_skipped + len(done),
        truth.sessions,
        time.monotonic() - began,
        truth_path,
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@click.command(
    "generate",
    help=__doc__,
    epilog="Example: cinema generate --events 100000 --seed 1 --writers 4",
)
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Backfill: exact number of rows to write.",
)
@click.option(
    "--start",
    type=click.DateTime(),
    default=None,
    help="Backfill: first session start, UTC [default: --end minus 7 days].",
)
@click.option(
    "--end",
    type=click.DateTime(),
    default=None,
    help="Backfill: sessions start before this, UTC [default: today 00:00 UTC].",
)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Live mode: events per second.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Live mode: seconds to run.",
)
@click.option("--seed", type=int, default=None, help="Same seed, same rows [default: random, printed].")
@click.option("--users", type=click.IntRange(min=1), default=2_000, show_default=True, help="Households.")
@click.option(
    "--writers",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Concurrent writer transactions.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=5_000,
    show_default=True,
    help="Backfill: rows per transaction (live mode commits each 100 ms of events as one).",
)
@click.option(
    "--dirty-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of sessions given a dirty-data kind: duplicate, late or orphan.",
)
@click.option(
    "--heartbeat-seconds",
    type=click.IntRange(min=5),
    default=30,
    show_default=True,
    help="Playback seconds between progress heartbeats.",
)
@click.option("--run-key", default=None, help="Name of this generation for idempotency [default: from options].")
@click.option(
    "--service",
    is_flag=True,
    help="Live mode as a service: run until SIGTERM or Ctrl-C, restartable without duplicates "
    "(same options, same --seed); --duration is ignored.",
)
def generate(
    events: int,
    start: datetime | None,
    end: datetime | None,
    rate: float | None,
    duration: float,
    seed: int | None,
    users: int,
    writers: int,
    chunk_size: int,
    dirty_rate: float,
    heartbeat_seconds: int,
    run_key: str | None,
    service: bool,
) -> None:
    from cinema.context import settings_from_context

    settings = settings_from_context()
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        log.info("no --seed given; using %d", seed)
    generation = Generation(
        seed, users, writers, chunk_size, dirty_rate, Behaviour(heartbeat_ms=heartbeat_seconds * 1000)
    )
    if service and rate is None:
        raise click.BadParameter("--service needs --rate, the events per second to write")
    if rate is not None:
        from cinema.signals import stop_on_signals
        from producer.service import serve

        with stop_on_signals("committing the events already handed to the writers, then stopping") as stop:
            outcome = serve(settings, generation, rate, stop, duration_seconds=None if service else duration)
    else:
        end_at = _utc(end) if end else datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start_at = _utc(start) if start else end_at - timedelta(days=7)
        if start_at >= end_at:
            raise click.BadParameter(f"--start {start_at:%F %T} is not before --end {end_at:%F %T}")
        if end_at > datetime.now(UTC):
            raise click.BadParameter(f"--end {end_at:%F %T} is in the future; a backfill writes what already happened")
        outcome = backfill(
            settings, generation, events, start_at, end_at, run_key=run_key, show_progress=sys.stderr.isatty()
        )
    rows_per_second = outcome.rows_written / outcome.seconds if outcome.seconds else 0.0
    click.echo(
        f"run {outcome.run_key}: {outcome.rows_written} events written "
        f"({rows_per_second:,.0f}/s over {outcome.seconds:.1f}s), {outcome.chunks_skipped} chunk(s) "
        f"already there, {outcome.sessions_finished} finished sessions -> {outcome.ground_truth}"
    )


if __name__ == "__main__":
    # `python producer/generate_events.py ...`, the original entry point, runs as the CLI would.
    from cinema.cli import main

    main(["generate", *sys.argv[1:]])
