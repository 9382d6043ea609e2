"""`cinema ingest FILE`: events from a JSON-lines file, validated, written all or nothing.

Every line is checked before anything is written, and every problem is reported
with its line number and field. A file with any bad line writes nothing; the
events already on the publisher are never touched. What only the database can
know (does this user exist?) is checked by its constraints in the same single
transaction, and its message names the field too.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import psycopg2

from cinema import db
from cinema.settings import Settings
from producer.behaviour import EVENT_TYPES
from producer.catalog import DEVICE_TYPES
from producer.stream import Row
from producer.writer import COPY_EVENTS, EVENT_COLUMNS, copy_text

MAX_REPORTED = 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidEvents(ValueError):
    """The file was rejected; nothing from it was written."""


def _uuid(value: object) -> str:
    return str(uuid.UUID(str(value)))


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return check


def _epoch_ms(value: object) -> int:
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError("must carry a time zone, e.g. 2026-11-28T20:15:00Z")
    return (moment - EPOCH) // timedelta(milliseconds=1)


FIELDS: dict[str, Callable[[object], object]] = {
    "event_id": _uuid,
    "session_id": _uuid,
    "user_id": _positive_int,
    "movie_id": _positive_int,
    "device_type": _one_of(DEVICE_TYPES),
    "event_type": _one_of(EVENT_TYPES),
    "position_ms": _non_negative_int,
    "event_time": _epoch_ms,
}
assert tuple(FIELDS) == EVENT_COLUMNS


def parse_event(line: str) -> Row:
    """One event as a row, or ValueError naming every bad field."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg})") from error
    if not isinstance(event, dict):
        raise ValueError("must be a JSON object")
    problems = [f"unknown field {name!r}" for name in event if name not in FIELDS]
    row = []
    for name, convert in FIELDS.items():
        if event.get(name) is None:
            problems.append(f"{name} is missing")
            continue
        try:
            row.append(convert(event[name]))
        except ValueError as error:
            problems.append(f"{name} {error}, got {event[name]!r}")
    if problems:
        raise ValueError("; ".join(problems))
    return cast(Row, tuple(row))


def _unknown_references(connection: db.Connection, rows: list[tuple[int, Row]]) -> list[str]:
    """Lines whose user or movie does not exist, found before anything is written."""
    problems = []
    for table, column, index in (("users", "user_id", 2), ("movies", "movie_id", 3)):
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {column} FROM {table} WHERE {column} = ANY(%s)",
                (sorted({row[index] for _, row in rows}),),
            )
            known = {found for (found,) in cursor.fetchall()}
        problems += [
            f"line {number}: {column} {row[index]} does not exist in {table}"
            for number, row in rows
            if row[index] not in known
        ]
    connection.rollback()
    return problems


def _rejection(path: Path, problems: list[str]) -> InvalidEvents:
    shown = problems[:MAX_REPORTED]
    more = f"\n... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    return InvalidEvents(f"{path}: {len(problems)} invalid line(s), nothing written:\n" + "\n".join(shown) + more)


def ingest_file(settings: Settings, path: Path) -> int:
    rows: list[tuple[int, Row]] = []
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, parse_event(line)))
        except ValueError as error:
            problems.append(f"line {number}: {error}")
    if problems:
        raise _rejection(path, problems)
    if not rows:
        return 0
    with db.closing(db.producer(settings)) as connection:
        problems = _unknown_references(connection, rows)
        if problems:
            raise _rejection(path, sorted(problems, key=lambda problem: int(problem.split()[1].rstrip(":"))))
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(COPY_EVENTS, io.StringIO(copy_text(row for _, row in rows)))
            connection.commit()
        except psycopg2.IntegrityError as error:
            # A constraint the checks above cannot see (or a user deleted meanwhile).
            connection.rollback()
            raise InvalidEvents(
                f"{path}: rejected by the publisher, nothing written: {error.diag.message_primary}"
            ) from error
    return len(rows)
