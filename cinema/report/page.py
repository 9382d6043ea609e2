"""The whole page as text: the stylesheet inlined, nothing fetched from outside."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib.resources import files

from cinema.names import MARTS_DATABASE
from cinema.report.charts import Bar, Point, bar_chart, bar_chart_height, heatmap_chart, line_chart, nice_axis
from cinema.report.marts import Day, Marts, Movie, Segment
from cinema.report.text import (
    DASH,
    axis_number,
    count,
    day_label,
    escape,
    hours,
    long_day,
    percent,
)

# daily_viewing's attribution rules, as its dbt description and the README state them.
DAILY_VIEWING_CAPTION = (
    "Watch time and viewers by the day the playback happened (UTC, cut at midnight); sessions by the day they started"
)
# Chart widths in SVG units: the page's column widths, so that text in the charts
# comes out at the size the stylesheet gives the page's own text.
FULL_WIDTH = 1086
HALF_WIDTH = 506


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
    stylesheet = files("cinema.report").joinpath("report.css").read_text(encoding="utf-8")
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
