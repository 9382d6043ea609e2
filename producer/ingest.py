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
from producer.binary_copy import copy_binary
from producer.catalog import DEVICE_TYPES
from producer.stream import Event, Row
from producer.writer import COPY_EVENTS, EVENT_COLUMNS

MAX_REPORTED = 20
# A bad value is quoted in a message up to this many characters, so a huge one is not echoed.
MAX_QUOTED = 40
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UTF8_BOM = b"\xef\xbb\xbf"
# The publisher's bounds (postgres_init/publisher/10_tables.sql), checked here first so
# that a violation is reported with its line and field.
INTEGER_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)


class InvalidEvents(ValueError):
    """The file was rejected; nothing from it was written."""


def quoted(value: object) -> str:
    """repr(value), cut to a short prefix."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(text):,} characters)"


def _uuid(value: object) -> bytes:
    try:
        return uuid.UUID(str(value)).bytes
    except ValueError:
        raise ValueError("must be a UUID") from None


def _integer(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return check


def _epoch_ms(value: object) -> int:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError("must be an ISO 8601 time, e.g. 2026-11-28T20:15:00Z")
    if moment.tzinfo is None:
        raise ValueError("must carry a time zone, e.g. 2026-11-28T20:15:00Z")
    if moment < EARLIEST_EVENT_TIME:
        raise ValueError("must be on or after 2000-01-01T00:00:00Z")
    return (moment - EPOCH) // timedelta(milliseconds=1)


FIELDS: dict[str, Callable[[object], object]] = {
    "event_id": _uuid,
    "session_id": _uuid,
    "user_id": _integer(1, INTEGER_MAX),
    "movie_id": _integer(1, INTEGER_MAX),
    "device_type": _one_of(DEVICE_TYPES),
    "event_type": _one_of(EVENT_TYPES),
    "position_ms": _integer(0, BIGINT_MAX),
    "event_time": _epoch_ms,
}
assert tuple(FIELDS) == EVENT_COLUMNS


def parse_event(line: str) -> Event:
    """One event, or ValueError naming every bad field."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    except (ValueError, RecursionError):
        # An integer of thousands of digits, or nesting deeper than Python's stack.
        raise ValueError("not valid JSON (a number too long or nesting too deep)") from None
    if not isinstance(event, dict):
        raise ValueError("must be a JSON object")
    problems = [f"unknown field {quoted(name)}" for name in event if name not in FIELDS]
    row = []
    for name, convert in FIELDS.items():
        if event.get(name) is None:
            problems.append(f"{name} is missing")
            continue
        try:
            row.append(convert(event[name]))
        except ValueError as error:
            problems.append(f"{name} {error}, got {quoted(event[name])}")
    if problems:
        raise ValueError("; ".join(problems))
    return Event._make(row)


def decode_line(raw: bytes) -> str:
    """A line of the file as text, or ValueError saying why it is not UTF-8 JSON text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); save the file as UTF-8"
        ) from None
    if "\x00" in text:
        raise ValueError("contains NUL characters (binary, or UTF-16?); save the file as UTF-8 text")
    return text


def _unknown_references(connection: db.Connection, rows: list[tuple[int, Event]]) -> list[str]:
    """Lines whose user or movie does not exist, found before anything is written."""
    problems = []
    for table, column in (("users", "user_id"), ("movies", "movie_id")):
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {column} FROM {table} WHERE {column} = ANY(%s)",
                (sorted({getattr(event, column) for _, event in rows}),),
            )
            known = {found for (found,) in cursor.fetchall()}
        problems += [
            f"line {number}: {column} {getattr(event, column)} does not exist in {table}"
            for number, event in rows
            if getattr(event, column) not in known
        ]
    connection.rollback()
    return problems


def _rejection(path: Path, problems: list[str]) -> InvalidEvents:
    shown = problems[:MAX_REPORTED]
    more = f"\n... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    return InvalidEvents(f"{path}: {len(problems)} invalid line(s), nothing written:\n" + "\n".join(shown) + more)


def read_events(path: Path) -> tuple[list[tuple[int, Event]], list[str]]:
    """The file's events by line number, and a problem per bad line."""
    events: list[tuple[int, Event]] = []
    problems: list[str] = []
    content = path.read_bytes().removeprefix(UTF8_BOM)
    for number, raw in enumerate(content.splitlines(), start=1):
        try:
            line = decode_line(raw)
            if line.strip():
                events.append((number, parse_event(line)))
        except ValueError as error:
            problems.append(f"line {number}: {error}")
    return events, problems


def ingest_file(settings: Settings, path: Path) -> int:
    rows, problems = read_events(path)
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
                # Received now, by the publisher's clock, as its default would stamp it.
                cursor.execute("SELECT (extract(epoch FROM now()) * 1000)::bigint")
                (received_ms,) = cast(tuple[int], cursor.fetchone())
                _, data = copy_binary(Row(*event, received_ms) for _, event in rows)
                cursor.copy_expert(COPY_EVENTS, io.BytesIO(data))
            connection.commit()
        except (psycopg2.IntegrityError, psycopg2.DataError) as error:
            # A constraint the checks above cannot see (or a user deleted meanwhile).
            connection.rollback()
            raise InvalidEvents(
                f"{path}: rejected by the publisher, nothing written: {error.diag.message_primary}"
            ) from error
    return len(rows)
