"""Bad events are refused with a message that names the line and the field."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from producer.ground_truth import timestamp_text
from producer.ingest import MAX_QUOTED, parse_event, read_events
from producer.stream import Event

GOOD = {
    "event_id": "0b6c1f1e-7a7e-4f3c-9a57-0b9f1f0f5a01",
    "session_id": "5f0f3d5e-2b61-4f4e-8d0c-1f5b1f7b9a02",
    "user_id": 12,
    "movie_id": 3,
    "device_type": "smart_tv",
    "event_type": "heartbeat",
    "position_ms": 30_000,
    "event_time": "2026-11-27T20:15:00.250Z",
}


def test_a_good_event_becomes_a_row():
    row = parse_event(json.dumps(GOOD))
    assert row == Event(
        uuid.UUID(GOOD["event_id"]).bytes,
        uuid.UUID(GOOD["session_id"]).bytes,
        12,
        3,
        "smart_tv",
        "heartbeat",
        30_000,
        1_795_810_500_250,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_type": "rewind"}, "event_type must be one of start, heartbeat, pause, resume, seek, stop"),
        ({"position_ms": -5}, "position_ms must be an integer from 0 to 9223372036854775807, got -5"),
        (
            {"position_ms": 2**63},
            "position_ms must be an integer from 0 to 9223372036854775807, got 9223372036854775808",
        ),
        ({"session_id": None}, "session_id is missing"),
        ({"user_id": "12"}, "user_id must be an integer from 1 to 2147483647"),
        ({"user_id": 2**31}, "user_id must be an integer from 1 to 2147483647"),
        ({"event_id": "not-a-uuid"}, "event_id must be a UUID"),
        ({"event_time": "0001-01-01T00:00:00Z"}, "event_time must be on or after 2000-01-01T00:00:00Z"),
        ({"event_time": "0026-01-01T00:00:00Z"}, "event_time must be on or after 2000-01-01T00:00:00Z"),
        ({"event_time": "1999-12-31T23:59:59.999Z"}, "event_time must be on or after 2000-01-01T00:00:00Z"),
        ({"event_time": "next tuesday"}, "event_time must be an ISO 8601 time"),
        ({"event_time": 1795810500}, "event_time must be an ISO 8601 time"),
        ({"event_time": "2026-11-27T20:15:00"}, "event_time must carry a time zone"),
        ({"device_type": "toaster"}, "device_type must be one of"),
        ({"colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_each_problem_names_its_field(change, message):
    event = {**GOOD, **change}
    with pytest.raises(ValueError, match=message):
        parse_event(json.dumps(event))


def test_every_problem_of_a_line_is_reported_at_once():
    with pytest.raises(
        ValueError, match="movie_id must be an integer from 1 to 2147483647, got 0; position_ms must be"
    ):
        parse_event(json.dumps({**GOOD, "position_ms": -1, "movie_id": 0}))


def test_not_json():
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_event("{oops")


def test_the_earliest_time_the_publisher_accepts_is_accepted():
    row = parse_event(json.dumps({**GOOD, "event_time": "2000-01-01T00:00:00Z"}))
    assert row.event_time_ms == 946_684_800_000


def test_a_long_value_is_quoted_by_a_short_prefix():
    with pytest.raises(ValueError, match="device_type must be one of") as raised:
        parse_event(json.dumps({**GOOD, "device_type": "x" * 10_000_000, "y" * 1000: 1}))
    message = str(raised.value)
    assert len(message) < 400
    assert f"got {'x' * (MAX_QUOTED - 1)}" not in message  # repr's quote takes one character
    assert "... (10,000,002 characters)" in message
    assert "... (1,002 characters)" in message


@pytest.mark.parametrize(
    "line",
    ["[" * 100_000, '{"user_id": ' + "9" * 5000 + "}"],
    ids=["nested too deep", "a 5,000-digit number"],
)
def test_json_python_cannot_hold_is_refused_not_raised(line):
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_event(line)


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ((json.dumps(GOOD) + "\n").encode("utf-16"), "line 1: not UTF-8 text (byte 0xff at column 1)"),
        ('{"device_type": "télé"}\n'.encode("latin-1"), "line 1: not UTF-8 text (byte 0xe9 at column 19)"),
        (b"\x00\x01\x02binary", "line 1: contains NUL characters"),
    ],
    ids=["UTF-16", "latin-1", "binary"],
)
def test_undecodable_files_are_reported_by_line(tmp_path, content, problem):
    events, problems = read_events(write(tmp_path, content))
    assert events == []
    assert problems[0].startswith(problem)


def test_a_utf8_file_with_a_byte_order_mark_and_crlf_is_read(tmp_path):
    content = b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\r\n\r\n" + json.dumps(GOOD) + "\r\n").encode()
    events, problems = read_events(write(tmp_path, content))
    assert problems == []
    assert [number for number, _ in events] == [1, 3]


@pytest.mark.parametrize(
    ("epoch_ms", "text"),
    [
        (-62_135_596_800_000, "0001-01-01 00:00:00.000+00"),
        (-61_338_384_000_000, "0026-04-07 00:00:00.000+00"),
        (946_684_800_000, "2000-01-01 00:00:00.000+00"),
        (1_795_810_500_250, "2026-11-27 20:15:00.250+00"),
    ],
)
def test_timestamps_are_written_with_four_digit_years(epoch_ms, text):
    """strftime('%Y') wrote year 1 as '1', which PostgreSQL reads as 2001."""
    assert timestamp_text(epoch_ms) == text
