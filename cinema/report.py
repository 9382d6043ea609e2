"""`cinema report`: the marts as one self-contained HTML page.

Everything is drawn here: each chart is SVG built from the marts, the stylesheet
is inlined, and the page refers to nothing outside itself (no scripts, fonts or
images to fetch), so it opens offline, as a CI artefact or an e-mail attachment
alike. Every text that comes from the data goes through `escape()`: film titles
carry quotes, apostrophes, ampersands and accents.

With a ClickHouse server the report reads as Metabase's user, which can read the
marts and nothing else; the embedded warehouse has no users.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import click
import yaml
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from cinema.paths import DBT_PROJECT
from cinema.settings import Settings
from cinema.warehouse import WarehouseBusy, connect

MARTS_DATABASE = "cinema_marts"
MARTS = (
    "viewing_sessions",
    "daily_viewing",
    "movie_performance",
    "movie_dropoff",
    "viewing_heatmap",
    "device_country_breakdown",
    "excluded_events",
    "now_watching",
)
NO_MARTS = "no marts yet: run `make demo` or `cinema transform`"
# daily_viewing's attribution rules, as its dbt description and the README state them.
DAILY_VIEWING_CAPTION = (
    "Watch time and viewers by the day the playback happened (UTC, cut at midnight); sessions by the day they started"
)
TOP_MOVIES = 10
TOP_COUNTRIES = 10
DASH = "\N{EN DASH}"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Chart widths in SVG units: the page's column widths, so that text in the charts
# comes out at the size the stylesheet gives the page's own text.
FULL_WIDTH = 1086
HALF_WIDTH = 506
# The heatmap's scale, from an empty hour to the busiest (the accent's tints).
HEAT_COLD = (238, 240, 255)
HEAT_HOT = (55, 48, 163)


class NoMarts(RuntimeError):
    """The marts are missing or hold no sessions."""


# --- What the report shows ----------------------------------------------------


@dataclass(frozen=True)
class Totals:
    sessions: int
    viewers: int
    watch_hours: float
    completion_rate: float
    avg_session_minutes: float
    first_event: datetime
    last_event: datetime
    # Deliveries dbt's plausibility rules left out of every figure (excluded_events).
    excluded_events: int = 0


@dataclass(frozen=True)
class Day:
    day: date
    watch_hours: float
    active_viewers: int
    sessions: int


@dataclass(frozen=True)
class Movie:
    title: str
    genre: str
    release_year: int
    sessions: int
    unique_viewers: int
    watch_hours: float
    completion_rate: float


@dataclass(frozen=True)
class Segment:
    """A device type or a country."""

    key: str
    name: str
    group: str
    sessions: int
    watch_hours: float
    completion_rate: float


@dataclass(frozen=True)
class Marts:
    # A session is completed once it reaches this share of the film (dbt's var completed_at_ratio).
    completed_at: float
    totals: Totals
    days: list[Day]
    top_movies: list[Movie]
    # Share of all sessions still watching at 10 %, 20 % .. 100 % of the film.
    dropoff: list[tuple[int, float]]
    # watch_minutes[weekday - 1][hour], the viewers' local time.
    heatmap: list[list[float]]
    devices: list[Segment]
    countries: list[Segment]
    # (minute, viewers watching, sessions in progress) over the last hours of data.
    now_watching: list[tuple[datetime, int, int]] = field(default_factory=list)
    # When the publisher received the newest event the marts were built from.
    as_of: datetime | None = None


def _rows(client: Client, sql: str) -> list[dict[str, Any]]:
    return list(client.query(sql).named_results())


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_marts(client: Client) -> Marts:
    """Everything the page shows, in a few small queries; NoMarts before dbt has run."""
    present = {
        row["name"] for row in _rows(client, f"SELECT name FROM system.tables WHERE database = '{MARTS_DATABASE}'")
    }
    missing = [mart for mart in MARTS if mart not in present]
    if len(missing) == len(MARTS):
        raise NoMarts(NO_MARTS)
    if missing:
        raise NoMarts(f"{NO_MARTS} ({MARTS_DATABASE} has no {', '.join(missing)})")
    marts = MARTS_DATABASE
    (totals,) = _rows(
        client,
        f"""
        SELECT count() AS sessions, uniqExact(user_id) AS viewers, sum(watched_seconds) / 3600 AS watch_hours,
               avg(is_completed) AS completion_rate, avg(watched_seconds) / 60 AS avg_session_minutes,
               min(started_at) AS first_event, max(ended_at) AS last_event,
               (SELECT count() FROM {marts}.excluded_events) AS excluded_events
        FROM {marts}.viewing_sessions WHERE NOT is_orphan
        """,
    )
    if totals["sessions"] == 0:
        raise NoMarts(f"{NO_MARTS} ({marts}.viewing_sessions has no sessions)")
    days = _rows(client, f"SELECT day, watch_hours, active_viewers, sessions FROM {marts}.daily_viewing ORDER BY day")
    movies = _rows(
        client,
        f"""
        SELECT movie_title AS title, genre, release_year, sessions, unique_viewers, watch_hours, completion_rate
        FROM {marts}.movie_performance WHERE sessions > 0
        ORDER BY watch_hours DESC, movie_id LIMIT {TOP_MOVIES}
        """,
    )
    dropoff = _rows(
        client,
        f"""
        SELECT position_bucket_pct AS bucket, sum(sessions_reaching) AS reaching
        FROM {marts}.movie_dropoff GROUP BY bucket ORDER BY bucket
        """,
    )
    heat = _rows(client, f"SELECT weekday, hour, watch_minutes FROM {marts}.viewing_heatmap")
    watching = _rows(
        client, f"SELECT minute, viewers, sessions_in_progress, as_of FROM {marts}.now_watching ORDER BY minute"
    )
    devices = _segments(client, "device_type", name="device_type", group="device_category")
    countries = _segments(client, "country_code", name="country_name", group="region", limit=TOP_COUNTRIES)
    heatmap = [[0.0] * 24 for _ in WEEKDAYS]
    for cell in heat:
        heatmap[cell["weekday"] - 1][cell["hour"]] = float(cell["watch_minutes"])
    return Marts(
        completed_at=completed_at_ratio(),
        totals=Totals(
            sessions=int(totals["sessions"]),
            viewers=int(totals["viewers"]),
            watch_hours=float(totals["watch_hours"]),
            completion_rate=float(totals["completion_rate"]),
            avg_session_minutes=float(totals["avg_session_minutes"]),
            first_event=_utc(totals["first_event"]),
            last_event=_utc(totals["last_event"]),
            excluded_events=int(totals["excluded_events"]),
        ),
        days=_every_day(days),
        top_movies=[
            Movie(
                title=row["title"],
                genre=row["genre"],
                release_year=int(row["release_year"]),
                sessions=int(row["sessions"]),
                unique_viewers=int(row["unique_viewers"]),
                watch_hours=float(row["watch_hours"]),
                completion_rate=float(row["completion_rate"]),
            )
            for row in movies
        ],
        dropoff=[(int(row["bucket"]), int(row["reaching"]) / totals["sessions"]) for row in dropoff],
        heatmap=heatmap,
        devices=[replace(device, name=device_name(device.key), group=device_name(device.group)) for device in devices],
        countries=countries,
        now_watching=[(_utc(row["minute"]), int(row["viewers"]), int(row["sessions_in_progress"])) for row in watching],
        as_of=_utc(watching[0]["as_of"]) if watching else None,
    )


def completed_at_ratio() -> float:
    variables = yaml.safe_load((DBT_PROJECT / "dbt_project.yml").read_text(encoding="utf-8"))["vars"]
    return float(variables["completed_at_ratio"])


def _every_day(rows: Sequence[dict[str, Any]]) -> list[Day]:
    """One Day per calendar day from the first to the last: a day without playback is a zero, not a gap."""
    by_day = {
        row["day"]: Day(row["day"], float(row["watch_hours"]), int(row["active_viewers"]), int(row["sessions"]))
        for row in rows
    }
    if not by_day:
        return []
    first, last = min(by_day), max(by_day)
    return [
        by_day.get(day, Day(day, 0.0, 0, 0))
        for day in (first + timedelta(days=offset) for offset in range((last - first).days + 1))
    ]


def _segments(client: Client, key: str, *, name: str, group: str, limit: int | None = None) -> list[Segment]:
    """device_country_breakdown summed up by device or by country, most watched first."""
    rows = _rows(
        client,
        f"""
        SELECT {key} AS segment, any({name}) AS segment_name, any({group}) AS segment_group,
               sum(sessions) AS segment_sessions, sum(watch_hours) AS segment_hours,
               sum(completion_rate * sessions) / sum(sessions) AS segment_completion
        FROM {MARTS_DATABASE}.device_country_breakdown
        GROUP BY segment ORDER BY segment_hours DESC, segment {f"LIMIT {limit}" if limit else ""}
        """,
    )
    return [
        Segment(
            key=row["segment"],
            name=row["segment_name"] or row["segment"],
            group=row["segment_group"] or "",
            sessions=int(row["segment_sessions"]),
            watch_hours=float(row["segment_hours"]),
            completion_rate=float(row["segment_completion"]),
        )
        for row in rows
    ]


# --- Numbers and text for people ----------------------------------------------


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def count(value: int) -> str:
    return f"{value:,}"


def hours(value: float) -> str:
    return f"{value:,.0f} h" if value >= 100 else f"{value:,.1f} h"


def percent(ratio: float, digits: int = 1) -> str:
    return f"{ratio * 100:.{digits}f}%"


def axis_number(value: float) -> str:
    """Axis labels: 0.5, 250, 1,500, 12k, 3M."""
    return compact(value) if value >= 10_000 else f"{value:,g}"


def compact(value: float) -> str:
    """Short numbers: 950, 1.5k, 12k, 3M."""
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.1f}".removesuffix(".0") + suffix
    return f"{value:.1f}".removesuffix(".0")


def day_label(day: date) -> str:
    return f"{day.day} {day:%b}"


def long_day(day: date) -> str:
    return f"{WEEKDAYS[day.weekday()]} {day.day} {day:%b %Y}"


def device_name(device_type: str) -> str:
    """smart_tv -> Smart TV."""
    text = " ".join("TV" if word == "tv" else word for word in device_type.split("_"))
    return text[:1].upper() + text[1:]


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _n(value: float) -> str:
    """An SVG coordinate."""
    return f"{value:.1f}".removesuffix(".0")


# --- Charts -------------------------------------------------------------------


def nice_axis(maximum: float, ticks: int = 4) -> list[float]:
    """Round tick values from 0 to just above `maximum`."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw_step = maximum / ticks
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    return [i * step for i in range(math.ceil(maximum / step - 1e-9) + 1)]


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tooltip: str


def line_chart(
    name: str,
    points: Sequence[Point],
    *,
    width: float,
    height: float,
    x_domain: tuple[float, float],
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[float],
    y_label: Callable[[float], str],
    start: tuple[float, float] | None = None,
    annotation: tuple[Point, str] | None = None,
) -> str:
    """A line over a shaded area; each point is a mark with its tooltip."""
    left, right, top, bottom = 52.0, 16.0, 14.0, 30.0
    x0, x1 = x_domain
    y_top = y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - y / y_top) * (height - top - bottom)

    parts = [_svg_open(name, width, height)]
    for tick in y_ticks:
        parts.append(
            f'<line class="grid" x1="{_n(left)}" x2="{_n(width - right)}" y1="{_n(sy(tick))}" y2="{_n(sy(tick))}"/>'
            f'<text class="tick" x="{_n(left - 8)}" y="{_n(sy(tick) + 4)}" text-anchor="end">'
            f"{escape(y_label(tick))}</text>"
        )
    for x, label in x_ticks:
        parts.append(
            f'<text class="tick" x="{_n(sx(x))}" y="{_n(height - 8)}" text-anchor="middle">{escape(label)}</text>'
        )
    line = [(sx(x), sy(y)) for x, y in ([start] if start else [])] + [(sx(p.x), sy(p.y)) for p in points]
    path = " ".join(f"{'M' if i == 0 else 'L'}{_n(x)},{_n(y)}" for i, (x, y) in enumerate(line))
    baseline = sy(0)
    parts.append(
        f'<path class="area" d="{path} L{_n(line[-1][0])},{_n(baseline)} L{_n(line[0][0])},{_n(baseline)} Z"/>'
    )
    parts.append(f'<path class="line" d="{path}"/>')
    if annotation:
        point, text = annotation
        x, y = sx(point.x), sy(point.y)
        parts.append(
            f'<line class="guide" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(y)}" y2="{_n(baseline)}"/>'
            f'<text class="annotation" x="{_n(x - 8)}" y="{_n((y + baseline) / 2 + 4)}" '
            f'text-anchor="end">{escape(text)}</text>'
        )
    dense = len(points) > 40
    for point in points:
        parts.append(
            f'<circle class="mark{" dense" if dense else ""}" r="{2.2 if dense else 3.5}" '
            f'cx="{_n(sx(point.x))}" cy="{_n(sy(point.y))}" '
            f'data-value="{point.y!r}"><title>{escape(point.tooltip)}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Bar:
    label: str
    detail: str
    value: float
    value_text: str
    tooltip: str


BAR_ROW = 46.0


def bar_chart_height(bars: int) -> float:
    return 4 + BAR_ROW * bars


def bar_chart(name: str, bars: Sequence[Bar], *, width: float, label_room: int = 64) -> str:
    """Horizontal bars, each under its label and details, largest first."""
    value_room = 72.0
    height = bar_chart_height(len(bars))
    maximum = max((bar.value for bar in bars), default=0) or 1
    parts = [_svg_open(name, width, height)]
    for i, bar in enumerate(bars):
        y = 4 + i * BAR_ROW
        # Label and details share one line: a long title gives way, never the details.
        label = shorten(bar.label, max(16, label_room - len(bar.detail)))
        length = max(2.0, bar.value / maximum * (width - value_room))
        parts.append(
            f'<text class="label" x="0" y="{_n(y + 14)}">{escape(label)}'
            f'<tspan class="detail" dx="8">{escape(bar.detail)}</tspan></text>'
            f'<rect class="track" x="0" y="{_n(y + 22)}" width="{_n(width - value_room)}" height="12" rx="6"/>'
            f'<rect class="mark bar" x="0" y="{_n(y + 22)}" width="{_n(length)}" height="12" rx="6" '
            f'data-value="{bar.value!r}"><title>{escape(bar.tooltip)}</title></rect>'
            f'<text class="value" x="{_n(width)}" y="{_n(y + 32)}" text-anchor="end">{escape(bar.value_text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def heatmap_chart(name: str, minutes: Sequence[Sequence[float]], *, width: float) -> str:
    """Weekday rows by hour columns, shaded from an idle hour to the busiest."""
    left, top, gap, cell_height = 40.0, 22.0, 3.0, 28.0
    cell_width = (width - left) / 24 - gap
    height = top + len(minutes) * (cell_height + gap) + 34
    busiest = max(max(row) for row in minutes) or 1
    parts = [_svg_open(name, width, height)]
    for hour in range(0, 24, 3):
        x = left + hour * (cell_width + gap)
        parts.append(f'<text class="tick" x="{_n(x)}" y="12">{hour:02d}:00</text>')
    for weekday, row in enumerate(minutes):
        y = top + weekday * (cell_height + gap)
        parts.append(f'<text class="tick" x="0" y="{_n(y + cell_height / 2 + 4)}">{WEEKDAYS[weekday]}</text>')
        for hour, value in enumerate(row):
            tooltip = f"{WEEKDAYS[weekday]} {hour:02d}:00{DASH}{(hour + 1) % 24:02d}:00: {hours(value / 60)} watched"
            parts.append(
                f'<rect class="mark cell" x="{_n(left + hour * (cell_width + gap))}" y="{_n(y)}" '
                f'width="{_n(cell_width)}" height="{_n(cell_height)}" rx="4" fill="{heat_colour(value / busiest)}" '
                f'data-value="{value!r}"><title>{escape(tooltip)}</title></rect>'
            )
    legend_y = height - 14
    swatch = 22.0
    parts.append(
        f'<text class="tick" x="{_n(width - 6 * swatch - 50)}" y="{_n(legend_y + 10)}" text-anchor="end">less</text>'
    )
    for step in range(5):
        x = width - (5 - step) * swatch - 40
        parts.append(
            f'<rect x="{_n(x)}" y="{_n(legend_y)}" width="{_n(swatch - 3)}" height="12" rx="3" '
            f'fill="{heat_colour(step / 4)}"/>'
        )
    parts.append(f'<text class="tick" x="{_n(width - 34)}" y="{_n(legend_y + 10)}">more</text>')
    parts.append("</svg>")
    return "".join(parts)


def heat_colour(share: float) -> str:
    # A square root spreads the quiet hours apart, which a linear scale would all paint alike.
    t = math.sqrt(max(0.0, min(1.0, share)))
    red, green, blue = (round(cold + (hot - cold) * t) for cold, hot in zip(HEAT_COLD, HEAT_HOT, strict=True))
    return f"#{red:02x}{green:02x}{blue:02x}"


def _svg_open(name: str, width: float, height: float) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'role="img" preserveAspectRatio="xMinYMin meet">'
    )


# --- The page -----------------------------------------------------------------


def _daily_chart(days: Sequence[Day]) -> str:
    first = days[0].day
    points = [
        Point(
            (day.day - first).days,
            day.watch_hours,
            f"{long_day(day.day)}: {hours(day.watch_hours)} watched, {count(day.active_viewers)} viewers, "
            f"{count(day.sessions)} sessions started",
        )
        for day in days
    ]
    span = (days[-1].day - first).days
    every = max(1, math.ceil((span + 1) / 8))
    x_ticks = [(offset, day_label(first + timedelta(days=offset))) for offset in range(0, span + 1, every)]
    return line_chart(
        "daily",
        points,
        width=FULL_WIDTH,
        height=260,
        x_domain=(0, max(span, 1)),
        x_ticks=x_ticks,
        y_ticks=nice_axis(max(day.watch_hours for day in days)),
        y_label=lambda value: axis_number(value) + " h",
    )


def _dropoff_chart(dropoff: Sequence[tuple[int, float]], completed_at: float, height: float) -> str:
    points = [
        Point(bucket, share, f"{percent(share)} of sessions reached {bucket}% of the film") for bucket, share in dropoff
    ]
    completed = next((point for point in points if point.x == round(completed_at * 100)), None)
    return line_chart(
        "dropoff",
        points,
        width=HALF_WIDTH,
        height=height,
        x_domain=(0, 100),
        x_ticks=[(pct, f"{pct}%") for pct in range(0, 101, 20)],
        y_ticks=[0, 0.25, 0.5, 0.75, 1.0],
        y_label=lambda share: percent(share, 0),
        start=(0, 1.0),
        annotation=(completed, f"{percent(completed.y, 0)} reach {completed.x:g}%: completed") if completed else None,
    )


def _now_watching_chart(minutes: Sequence[tuple[datetime, int, int]]) -> str:
    first = minutes[0][0]
    points = [
        Point(
            (minute - first).total_seconds() / 60,
            viewers,
            f"{minute:%H:%M} UTC: {count(viewers)} viewers watching, {count(sessions)} sessions in progress",
        )
        for minute, viewers, sessions in minutes
    ]
    span = points[-1].x
    return line_chart(
        "now-watching",
        points,
        width=FULL_WIDTH,
        height=220,
        x_domain=(0, max(span, 1)),
        x_ticks=[(offset, f"{first + timedelta(minutes=offset):%H:%M}") for offset in range(0, int(span) + 1, 30)],
        y_ticks=nice_axis(max(1, *(point.y for point in points))),
        y_label=axis_number,
    )


def _movie_bars(movies: Sequence[Movie]) -> list[Bar]:
    return [
        Bar(
            label=movie.title,
            detail=f"{movie.genre} · {movie.release_year} · {count(movie.sessions)} sessions",
            value=movie.watch_hours,
            value_text=hours(movie.watch_hours),
            tooltip=f"{movie.title} ({movie.release_year}): {hours(movie.watch_hours)} by "
            f"{count(movie.unique_viewers)} viewers, {percent(movie.completion_rate)} completed",
        )
        for movie in movies
    ]


def _segment_bars(segments: Sequence[Segment]) -> list[Bar]:
    return [
        Bar(
            label=segment.name,
            detail=" · ".join(
                part for part in (segment.group, f"{percent(segment.completion_rate, 0)} completed") if part
            ),
            value=segment.watch_hours,
            value_text=hours(segment.watch_hours),
            tooltip=f"{segment.name}: {hours(segment.watch_hours)} in {count(segment.sessions)} sessions, "
            f"{percent(segment.completion_rate)} completed",
        )
        for segment in segments
    ]


def _card(title: str, subtitle: str, chart: str, *, wide: bool = False) -> str:
    return (
        f'<section class="card{" wide" if wide else ""}"><h2>{escape(title)}</h2>'
        f'<p class="subtitle">{escape(subtitle)}</p>{chart}</section>'
    )


def _kpi(key: str, label: str, value: str, note: str) -> str:
    return (
        f'<div class="kpi" data-kpi="{key}"><div class="kpi-label">{escape(label)}</div>'
        f'<div class="kpi-value">{escape(value)}</div><div class="kpi-note">{escape(note)}</div></div>'
    )


def render(marts: Marts, generated_at: datetime) -> str:
    """The whole page, as text."""
    totals = marts.totals
    completed = f"reached {percent(marts.completed_at, 0)} of the film"
    first, last = totals.first_event.date(), totals.last_event.date()
    period = f"{long_day(first)} {DASH} {long_day(last)}"
    days = (last - first).days + 1
    kpis = "".join(
        (
            _kpi("sessions", "Sessions", count(totals.sessions), f"{count(round(totals.sessions / days))} a day"),
            _kpi("viewers", "Viewers", count(totals.viewers), f"{totals.sessions / totals.viewers:.1f} sessions each"),
            _kpi(
                "watch_hours",
                "Watch time",
                hours(totals.watch_hours),
                f"{totals.avg_session_minutes:.0f} min a session",
            ),
            _kpi("completion_rate", "Completion rate", percent(totals.completion_rate), completed),
            _kpi("days", "Period", f"{count(days)} days", f"{day_label(first)} {DASH} {day_label(last)} {last:%Y}"),
        )
    )
    cards = "".join(
        (
            _card(
                "Daily watch time",
                DAILY_VIEWING_CAPTION,
                _daily_chart(marts.days),
                wide=True,
            ),
            _card(
                "Top films",
                f"The {len(marts.top_movies)} most watched, by hours of playback",
                bar_chart("movies", _movie_bars(marts.top_movies), width=HALF_WIDTH),
            ),
            _card(
                "Where viewers drop off",
                "Share of sessions still watching at each point of the film",
                _dropoff_chart(marts.dropoff, marts.completed_at, max(300, bar_chart_height(len(marts.top_movies)))),
            ),
            _card(
                "When people watch",
                "Playback by weekday and hour, in each viewer's local time",
                heatmap_chart("heatmap", marts.heatmap, width=FULL_WIDTH),
                wide=True,
            ),
            _card(
                "Devices",
                "Hours of playback by device type",
                bar_chart("devices", _segment_bars(marts.devices), width=HALF_WIDTH),
            ),
            _card(
                "Countries",
                f"Hours of playback by viewer country, top {len(marts.countries)}",
                bar_chart("countries", _segment_bars(marts.countries), width=HALF_WIDTH),
            ),
        )
    )
    if marts.now_watching:
        as_of = f", marts as of {marts.as_of:%Y-%m-%d %H:%M:%S} UTC" if marts.as_of else ""
        cards += _card(
            "Now watching",
            f"Viewers watching per minute (UTC) over the last hours of data{as_of}",
            _now_watching_chart(marts.now_watching),
            wide=True,
        )
    stylesheet = files("cinema").joinpath("report.css").read_text(encoding="utf-8")
    generated = f"{generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="cinema report">
<title>Cinema viewing report · {escape(period)}</title>
<style>
{stylesheet}</style>
</head>
<body>
<main>
<header>
<p class="eyebrow">cinema-analytics</p>
<h1>Viewing report</h1>
<p class="meta">{escape(period)} · generated {escape(generated)}</p>
</header>
<div class="kpis">{kpis}</div>
<div class="grid">{cards}</div>
<footer>Built from the dbt marts in {MARTS_DATABASE} by <code>cinema report</code>.
Sessions exclude orphan fragments; a completed session {completed}.
{count(marts.totals.excluded_events)} implausible deliveries are left out of every figure
({MARTS_DATABASE}.excluded_events lists each with its rule).</footer>
</main>
</body>
</html>
"""


def default_output(settings: Settings) -> Path:
    return settings.state_dir / "report" / "index.html"


def open_marts(settings: Settings) -> Client:
    """A client that can read the marts: Metabase's read-only user on a server."""
    if settings.warehouse.interface == "http":
        return connect(
            settings,
            user=settings.metabase.clickhouse_user,
            password=settings.metabase.clickhouse_password,
            database=MARTS_DATABASE,
        )
    return connect(settings)


def write_report(settings: Settings, output: Path) -> Path:
    client = open_marts(settings)
    try:
        marts = read_marts(client)
    finally:
        client.close()
    page = render(marts, datetime.now(UTC))
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a reader never sees half a page.
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, output)
    return output


@click.command("report")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the page.  [default: <state dir>/report/index.html]",
)
def report(output: Path | None) -> None:
    """Write the marts as one self-contained HTML page (offline, no scripts) and print its path."""
    from cinema.cli import settings_from_context

    settings = settings_from_context()
    try:
        written = write_report(settings, output or default_output(settings))
    except (NoMarts, WarehouseBusy) as error:
        raise click.ClickException(str(error)) from error
    except ClickHouseError as error:
        raise click.ClickException(f"could not read the marts: {error}") from error
    click.echo(str(written))
