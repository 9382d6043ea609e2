"""`cinema report` on real marts, laid out by a real browser.

The pipeline runs once through the CLI (generate, load, transform, report) into a
warehouse of this module's own. Headless Chromium then opens a copy of the page with
a probe script added (the report itself has no scripts) that reads back what the
browser drew: every chart's marks, where and how big they are, and the numbers the
page shows, which must be the marts' own.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cinema.warehouse import warehouse_client
from scripts import chromium
from tests.integration.conftest import RunningStack, chromium_or_skip

pytestmark = pytest.mark.integration

CHARTS = {"daily", "movies", "dropoff", "heatmap", "devices", "countries", "now-watching"}
PROBE = """<script>
const box = (element) => {
  const r = element.getBoundingClientRect();
  return {x: r.x, y: r.y, w: r.width, h: r.height};
};
const charts = {};
for (const svg of document.querySelectorAll("svg.chart")) {
  charts[svg.dataset.chart] = {
    box: box(svg),
    marks: [...svg.querySelectorAll(".mark")].map((mark) => ({
      ...box(mark),
      value: Number(mark.dataset.value),
      tooltip: mark.querySelector("title").textContent,
      fill: getComputedStyle(mark).fill,
    })),
    labels: [...svg.querySelectorAll("text.label")].map((label) => label.firstChild.textContent),
    values: [...svg.querySelectorAll("text.value")].map((value) => value.textContent),
  };
}
const kpis = {};
for (const kpi of document.querySelectorAll("[data-kpi]")) {
  kpis[kpi.dataset.kpi] = kpi.querySelector(".kpi-value").textContent;
}
const probe = document.createElement("pre");
probe.id = "probe";
probe.textContent = JSON.stringify({
  charts, kpis, pageWidth: document.documentElement.scrollWidth, windowWidth: window.innerWidth,
});
document.body.append(probe);
</script>"""


@dataclass(frozen=True)
class Rendered:
    page: str
    drawn: dict[str, Any]
    marts: dict[str, Any]


def marts_as_read_here(stack: RunningStack) -> dict[str, Any]:
    """What the page should show, asked of the marts directly."""
    with warehouse_client(stack.settings) as client:

        def rows(sql: str) -> list[dict[str, Any]]:
            return list(client.query(sql).named_results())

        (totals,) = rows(
            "SELECT count() AS sessions, uniqExact(user_id) AS viewers, sum(watched_seconds) / 3600 AS watch_hours, "
            "avg(is_completed) AS completion_rate FROM cinema_marts.viewing_sessions WHERE NOT is_orphan"
        )
        return {
            "totals": totals,
            "days": rows("SELECT day, watch_hours FROM cinema_marts.daily_viewing ORDER BY day"),
            "movies": rows(
                "SELECT movie_title, watch_hours FROM cinema_marts.movie_performance WHERE sessions > 0 "
                "ORDER BY watch_hours DESC, movie_id LIMIT 10"
            ),
            "reaching": rows(
                "SELECT sum(sessions_reaching) AS reaching FROM cinema_marts.movie_dropoff "
                "GROUP BY position_bucket_pct ORDER BY position_bucket_pct"
            ),
            "heatmap": rows("SELECT watch_minutes FROM cinema_marts.viewing_heatmap ORDER BY weekday, hour"),
            "now_watching": rows("SELECT viewers FROM cinema_marts.now_watching ORDER BY minute"),
            "devices": rows(
                "SELECT device_type, sum(watch_hours) AS watch_hours FROM cinema_marts.device_country_breakdown "
                "GROUP BY device_type ORDER BY watch_hours DESC, device_type"
            ),
            "countries": rows(
                "SELECT country_code, sum(watch_hours) AS watch_hours FROM cinema_marts.device_country_breakdown "
                "GROUP BY country_code ORDER BY watch_hours DESC, country_code LIMIT 10"
            ),
        }


@pytest.fixture(scope="module")
def rendered(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    chromium_or_skip()
    root = tmp_path_factory.mktemp("report")
    own = stack.with_warehouse(root / "warehouse")
    own.cinema(
        "generate", "--events", "20000", "--seed", "5150", "--dirty-rate", "0.05",
        "--start", "2026-03-02", "--end", "2026-03-16",
    )  # fmt: skip
    # A film watched until two minutes ago: whichever test's event is the newest that
    # counts (none is later than a few minutes from now), this playback lies inside the
    # three hours of now_watching before it, so those minutes never all hold one count.
    now, session_id = datetime.now(UTC), str(uuid.uuid4())
    watched = root / "watched.jsonl"
    with watched.open("w") as events:
        for event_type, position_ms, minutes_ago in (("start", 0, 10), ("heartbeat", 240_000, 6), ("stop", 480_000, 2)):
            at = (now - timedelta(minutes=minutes_ago)).isoformat()
            event = {"event_id": str(uuid.uuid4()), "session_id": session_id, "user_id": 1, "movie_id": 1}
            event |= {"device_type": "smart_tv", "event_type": event_type, "position_ms": position_ms, "event_time": at}
            events.write(json.dumps(event) + "\n")
    own.cinema("ingest", str(watched))
    own.cinema("load", "--until-caught-up")
    own.cinema("transform")
    output = root / "site" / "index.html"
    printed = own.cinema("report", "--output", str(output)).stdout.strip()
    assert printed == str(output)
    page = output.read_text(encoding="utf-8")
    probed = root / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium.dump_dom(probed, width=1280, height=2000)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the probe did not run: {dom[-2000:]}"
    return Rendered(page, json.loads(html.unescape(found.group(1))), marts_as_read_here(own))


def test_the_page_needs_nothing_from_outside(rendered: Rendered) -> None:
    page = rendered.page.lower()
    for reference in ("http://", "https://", "@import", "url(", "<script", "<link", " src=", " href="):
        assert reference not in page, reference
    assert rendered.drawn["pageWidth"] <= rendered.drawn["windowWidth"], "the page overflows sideways"


def test_the_header_shows_the_marts_totals(rendered: Rendered) -> None:
    totals = rendered.marts["totals"]
    assert totals["sessions"] > 0
    kpis = rendered.drawn["kpis"]
    assert kpis["sessions"] == f"{totals['sessions']:,}"
    assert kpis["viewers"] == f"{totals['viewers']:,}"
    hours = totals["watch_hours"]
    assert kpis["watch_hours"] == (f"{hours:,.0f} h" if hours >= 100 else f"{hours:,.1f} h")
    assert kpis["completion_rate"] == f"{totals['completion_rate'] * 100:.1f}%"


def drawn(rendered: Rendered, chart: str, expected_values: list[float]) -> list[dict[str, Any]]:
    """The chart's marks, checked to be the expected values, each drawn inside the chart."""
    drawing = rendered.drawn["charts"][chart]
    marks: list[dict[str, Any]] = drawing["marks"]
    assert [mark["value"] for mark in marks] == pytest.approx(expected_values, rel=1e-9, abs=1e-9), chart
    frame = drawing["box"]
    assert frame["w"] > 300, chart
    assert frame["h"] > 100, chart
    for mark in marks:
        assert mark["w"] > 1.5, (chart, mark)
        assert mark["h"] > 1.5, (chart, mark)
        assert frame["x"] - 1 <= mark["x"] <= mark["x"] + mark["w"] <= frame["x"] + frame["w"] + 1, (chart, mark)
        assert frame["y"] - 1 <= mark["y"] <= mark["y"] + mark["h"] <= frame["y"] + frame["h"] + 1, (chart, mark)
    return marks


def assert_bars_measure_their_values(marks: list[dict[str, Any]]) -> None:
    longest = max(marks, key=lambda mark: mark["value"])
    for mark in marks:
        assert mark["h"] >= 8
        assert mark["w"] == pytest.approx(max(2.0, mark["value"] / longest["value"] * longest["w"]), abs=1.5)


def assert_points_rise_with_their_values(marks: list[dict[str, Any]]) -> None:
    """Each point's height on screen is a linear function of its value (higher is more)."""
    low, high = min(marks, key=lambda m: m["value"]), max(marks, key=lambda m: m["value"])
    pixels_per_unit = (low["y"] - high["y"]) / (high["value"] - low["value"])
    assert pixels_per_unit > 0
    for mark in marks:
        assert mark["y"] == pytest.approx(low["y"] - (mark["value"] - low["value"]) * pixels_per_unit, abs=1.0)


def test_every_chart_drew_the_marts(rendered: Rendered) -> None:
    marts = rendered.marts
    assert set(rendered.drawn["charts"]) == CHARTS

    # Every calendar day from the first to the last, zero where the mart has no row.
    watched = {row["day"]: row["watch_hours"] for row in marts["days"]}
    first, last = min(watched), max(watched)
    every_day = [watched.get(first + timedelta(days=n), 0.0) for n in range((last - first).days + 1)]
    daily = drawn(rendered, "daily", every_day)
    assert len(daily) >= 14
    assert_points_rise_with_their_values(daily)

    movies = drawn(rendered, "movies", [movie["watch_hours"] for movie in marts["movies"]])
    assert len(movies) == 10
    assert_bars_measure_their_values(movies)
    labels = rendered.drawn["charts"]["movies"]["labels"]
    for movie, label, mark in zip(marts["movies"], labels, movies, strict=True):
        assert movie["movie_title"].startswith(label.removesuffix("…")), (movie, label)
        assert mark["tooltip"].startswith(f"{movie['movie_title']} (")

    sessions = marts["totals"]["sessions"]
    dropoff = drawn(rendered, "dropoff", [bucket["reaching"] / sessions for bucket in marts["reaching"]])
    assert len(dropoff) == 10
    assert_points_rise_with_their_values(dropoff)
    assert [mark["x"] for mark in dropoff] == sorted(mark["x"] for mark in dropoff)

    cells = drawn(rendered, "heatmap", [cell["watch_minutes"] for cell in marts["heatmap"]])
    assert len(cells) == 7 * 24
    busiest = max(cells, key=lambda cell: cell["value"])
    idlest = min(cells, key=lambda cell: cell["value"])
    assert busiest["fill"] != idlest["fill"]
    assert min(cell["w"] for cell in cells) > 10
    assert min(cell["h"] for cell in cells) > 10

    devices = drawn(rendered, "devices", [device["watch_hours"] for device in marts["devices"]])
    assert len(devices) >= 5
    assert_bars_measure_their_values(devices)

    countries = drawn(rendered, "countries", [country["watch_hours"] for country in marts["countries"]])
    assert len(countries) == 10
    assert_bars_measure_their_values(countries)

    # Every minute of the three hours before the newest event that counts, one point each.
    watching = drawn(rendered, "now-watching", [float(minute["viewers"]) for minute in marts["now_watching"]])
    assert len(watching) == 3 * 60 + 1
    assert_points_rise_with_their_values(watching)


def test_without_marts_the_report_says_what_to_run(stack: RunningStack, tmp_path: Path) -> None:
    empty = stack.with_warehouse(tmp_path / "warehouse")
    output = tmp_path / "report.html"
    result = empty.cinema("report", "--output", str(output), check=False)
    assert result.returncode == 1
    assert "no marts yet: run `make demo` or `cinema transform`" in result.stderr
    assert not output.exists()
