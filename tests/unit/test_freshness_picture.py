"""The freshness picture is drawn from the capacity steps in build/bench.json, whatever their number."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import click
import pytest

from scripts.draw_freshness import draw, steps

CAPACITY = {
    "hold_seconds": 30.0,
    "sustained_events_per_second": 10_000.0,
    **{
        f"offered_{rate}_freshness_{name}_seconds": seconds
        for rate, quantiles in {5000: (0.4, 0.7, 0.9), 10000: (0.5, 0.8, 0.95), 20000: (0.9, 2.5, 4.0)}.items()
        for name, seconds in zip(("p50", "p95", "p99"), quantiles, strict=True)
    },
    "offered_5000_sustained": 1.0,
    "offered_10000_sustained": 1.0,
    "offered_20000_sustained": 0.0,
}


def test_steps_are_read_by_offered_rate_in_order() -> None:
    read = steps(CAPACITY)
    assert list(read) == [5000, 10000, 20000]
    assert read[20000] == {"p50": 0.9, "p95": 2.5, "p99": 4.0, "sustained": 0.0}


def test_each_quantile_is_a_line_through_every_step() -> None:
    svg = draw(CAPACITY, "2026-12-01T10:00:00+00:00")
    root = ElementTree.fromstring(svg)  # noqa: S314 - our own output
    namespace = {"svg": "http://www.w3.org/2000/svg"}
    paths = root.findall("svg:path", namespace)
    assert len(paths) == 3
    assert all(len(re.findall(r"[ML]", path.get("d", ""))) == 3 for path in paths)
    assert len(root.findall("svg:circle", namespace)) == 9
    text = " ".join(element.text or "" for element in root.iter())
    assert "20k" in text
    assert "capacity 10,000 events/s" in text
    assert text.count("not sustained") == 1
    assert "goal: p99 ≤ 1 s" in text


def test_close_bisected_rates_get_labels_on_alternate_rows() -> None:
    bisected = {
        **CAPACITY,
        **{f"offered_10500_freshness_{name}_seconds": 0.5 for name in ("p50", "p95", "p99")},
        "offered_10500_sustained": 0.0,
    }
    root = ElementTree.fromstring(draw(bisected, "now"))  # noqa: S314 - our own output
    rows = {
        element.text: float(element.get("y", "0"))
        for element in root.iter("{http://www.w3.org/2000/svg}text")
        if (element.text or "").endswith("k")
    }
    assert set(rows) == {"5k", "10k", "10.5k", "20k"}
    assert rows["10.5k"] > rows["10k"] == rows["20k"]


def test_a_bench_without_steps_is_a_clear_error() -> None:
    with pytest.raises(click.ClickException, match="no capacity steps"):
        draw({"sustained_events_per_second": 0.0}, "now")
