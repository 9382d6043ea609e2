"""The live service: the same stream always falls into the same windows, and leaves nothing for the cycle collector."""

from __future__ import annotations

import gc
import random
from itertools import islice

from producer.behaviour import Behaviour
from producer.catalog import load_movies, make_users
from producer.service import WINDOW_MS, windows
from producer.stream import EventStream, PoolArrivals, Row, World

ANCHOR_MS = 1_800_000_000_000


def row(name: str, at_ms: int) -> Row:
    return Row(name.encode(), b"session", 1, 1, "phone", "heartbeat", 0, ANCHOR_MS + at_ms, ANCHOR_MS + at_ms)


def test_rows_fall_into_the_window_of_the_stream_clock() -> None:
    rows = [row("a", 0), row("b", 99), row("c", 100), row("late", 20), row("d", 350)]
    found = [
        (w.number, w.ends_ms - ANCHOR_MS, [r.event_id.decode() for r in w.rows]) for w in windows(iter(rows), ANCHOR_MS)
    ]
    # A late delivery (its event happened earlier) goes with the window it is delivered in;
    # windows without rows are skipped, so chunk numbers may have gaps.
    assert found == [(0, WINDOW_MS, ["a", "b"]), (1, 2 * WINDOW_MS, ["c", "late"]), (3, 4 * WINDOW_MS, ["d"])]


def test_the_same_rows_give_the_same_windows() -> None:
    rows = [row(str(n), n * 37) for n in range(100)]
    first = [(w.number, len(w.rows)) for w in windows(iter(rows), ANCHOR_MS)]
    assert first == [(w.number, len(w.rows)) for w in windows(iter(rows), ANCHOR_MS)]
    assert sum(size for _, size in first) == 100


def test_the_live_stream_leaves_no_garbage_only_the_cycle_collector_could_free() -> None:
    """`serve` freezes what survives each window (gc.freeze()), so the collector never
    scans the pool again: that is safe only while ended sessions are freed by reference
    counting alone, which is what this checks, dirty sessions included."""
    world = World(make_users(200), load_movies())
    finished: list[int] = []
    arrivals = PoolArrivals(random.Random("7/arrivals"), world, ANCHOR_MS, 100, Behaviour().heartbeat_ms)
    stream = EventStream(7, world, arrivals, Behaviour(), 0.2, lambda _record: finished.append(1))
    gc.collect()
    gc.disable()
    try:
        # 100 viewers, one event each per 30 s heartbeat: about 17 hours of stream time.
        assert sum(1 for _ in islice(iter(stream), 200_000)) == 200_000
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert len(finished) > 1_000  # ended sessions, each replaced by a new viewer
    assert unreachable == 0
