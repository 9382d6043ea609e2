"""Live mode: "now" events at a steady rate, each written once its moment has come.

`cinema generate --rate R --service` runs until stopped (Compose: the `producer` service
of the `live` profile; embedded: a child of `cinema live`); `--rate R --duration S` is the
same loop for S seconds of stream time, as a run of its own. The stream is a pool of
viewers (each session's realism from producer/stream.py) fixed by the generation and an
anchor time. Chunk n holds the rows whose stream clock (the newest arrival seen so far)
lies in [anchor + n * WINDOW_MS, anchor + (n + 1) * WINDOW_MS), and is written once that
window has passed. A service's run key carries the anchor, so a restart with the same
options finds the run in the chunk ledger, rebuilds the very same stream from the same
anchor, skips the chunks already committed, writes the ones it missed while it was down
(as fast as the publisher takes them) and then paces again: nothing is written twice and
nothing is lost. Stopping (SIGTERM, Ctrl-C) sets an Event the pacing waits on; the chunks
already handed to the writers are committed before it returns.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cinema import db
from cinema.db import Connection
from cinema.settings import Settings
from producer.binary_copy import copy_binary
from producer.catalog import load_movies, make_users
from producer.generate_events import Generation, Outcome
from producer.ground_truth import GroundTruthWriter
from producer.stream import EventStream, PoolArrivals, Row, World
from producer.writer import Chunk, ChunkWriters, committed_chunks, ensure_reference_data

WINDOW_MS = 100


@dataclass(frozen=True)
class Window:
    number: int
    ends_ms: int
    rows: list[Row]


def run_key_prefix(generation: Generation, rate: float) -> str:
    return f"live-service-{generation.key('service', rate)}-"


def find_anchor(connection: Connection, prefix: str) -> int | None:
    """The anchor (epoch ms) of this generation's latest run in the ledger, if any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT run_key FROM producer_batches WHERE run_key LIKE %s ORDER BY written_at DESC LIMIT 1",
            (prefix + "%",),
        )
        row = cursor.fetchone()
    connection.commit()
    return int(row[0].removeprefix(prefix)) if row else None


def windows(rows: Iterator[Row], anchor_ms: int, window_ms: int = WINDOW_MS) -> Iterator[Window]:
    """Rows grouped by the window their arrival (received_at) falls in; the same rows give the same windows."""
    clock = anchor_ms
    current: list[Row] = []
    number = 0
    for row in rows:
        clock = max(clock, row.received_ms)
        row_window = (clock - anchor_ms) // window_ms
        if row_window != number and current:
            yield Window(number, anchor_ms + (number + 1) * window_ms, current)
            current = []
        number = row_window
        current.append(row)
    if current:
        yield Window(number, anchor_ms + (number + 1) * window_ms, current)


def serve(
    settings: Settings,
    generation: Generation,
    rate: float,
    stop: threading.Event,
    *,
    duration_seconds: float | None = None,
) -> Outcome:
    """Write events as they happen at about `rate` per second until `stop` is set: a service
    that resumes its run, or with `duration_seconds` a new run that ends by itself then."""
    users = make_users(generation.users)
    world = World(users, load_movies())
    with db.closing(db.producer(settings)) as connection:
        ensure_reference_data(connection, users, world.movies)
        if duration_seconds is None:
            prefix = run_key_prefix(generation, rate)
            anchor_ms = find_anchor(connection, prefix) or int(time.time() * 1000)
            run_key = f"{prefix}{anchor_ms}"
            done = committed_chunks(connection, run_key)
        else:
            anchor_ms = int(time.time() * 1000)
            run_key = f"live-{generation.key('live', time.time_ns())}"
            done = set()
    end_ms = None if duration_seconds is None else anchor_ms + int(duration_seconds * 1000)
    heartbeat_ms = generation.behaviour.heartbeat_ms
    # A playing viewer sends about one event per heartbeat interval.
    pool = max(1, round(rate * heartbeat_ms / 1000))
    arrivals = PoolArrivals(random.Random(f"{generation.seed}/arrivals"), world, anchor_ms, pool, heartbeat_ms)
    truth_path = settings.ground_truth_dir / f"{run_key}.csv"
    began = time.monotonic()
    with GroundTruthWriter(truth_path) as truth:
        stream = EventStream(
            generation.seed, world, arrivals, generation.behaviour, generation.dirty_rate, truth, end_ms
        )
        writers = ChunkWriters(lambda: db.producer(settings), run_key, generation.writers)
        try:
            for window in windows(iter(stream), anchor_ms):
                if stop.wait(max(0.0, window.ends_ms / 1000 - time.time())):
                    break
                if window.number not in done:
                    writers.submit(Chunk(window.number, *copy_binary(window.rows)))
                # The pool holds rate x heartbeat sessions (600,000 at 20,000 events/s), and each full
                # collection would scan them all: pauses of seconds that grow with the rate. Live
                # sessions hold no reference cycles, so what survives a window is moved out of the
                # collector's reach; it is still freed by reference counting once a session ends.
                gc.freeze()
        finally:
            writers.close()
    return Outcome(run_key, writers.rows_written, len(done), truth.sessions, time.monotonic() - began, truth_path)
