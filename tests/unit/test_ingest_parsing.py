"""Bad events are refused with a message that names the line and the field."""

from __future__ import annotations

import json

import pytest

from producer.ingest import parse_event

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
    assert row == (
        GOOD["event_id"],
        GOOD["session_id"],
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
        ({"position_ms": -5}, "position_ms must be an integer >= 0, got -5"),
        ({"session_id": None}, "session_id is missing"),
        ({"user_id": "12"}, "user_id must be a positive integer"),
        ({"event_id": "not-a-uuid"}, "event_id"),
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
    with pytest.raises(ValueError, match="movie_id must be a positive integer, got 0; position_ms must be"):
        parse_event(json.dumps({**GOOD, "position_ms": -1, "movie_id": 0}))


def test_not_json():
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_event("{oops")
