"""The live service's chunks: the same stream always falls into the same windows."""

from __future__ import annotations

from producer.service import WINDOW_MS, windows
from producer.stream import Row

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
