"""What the report shows, read from the dbt marts in a few small queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml
from clickhouse_connect.driver.client import Client

from cinema.names import MARTS_DATABASE
from cinema.paths import DBT_PROJECT
from cinema.report.text import (
    WEEKDAYS,
    device_name,
)
from cinema.settings import Settings
from cinema.warehouse import connect

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
TOP_MOVIES = 10
TOP_COUNTRIES = 10


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
