"""The producer's binary COPY rows, read back field by field as PostgreSQL reads them."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime

from producer.binary_copy import HEADER, SIGNATURE, TRAILER, copy_binary
from producer.stream import Row

EVENT_ID = uuid.UUID("0b6c1f1e-7a7e-4f3c-9a57-0b9f1f0f5a01")
SESSION_ID = uuid.UUID("5f0f3d5e-2b61-4f4e-8d0c-1f5b1f7b9a02")
EVENT_MS = int(datetime(2026, 11, 27, 20, 15, 0, 250_000, tzinfo=UTC).timestamp() * 1000)


def read_fields(data: bytes) -> list[list[bytes]]:
    """An independent reader of the format: per row, each field's bytes."""
    assert data.startswith(SIGNATURE)
    assert data[: len(HEADER)] == HEADER
    assert data.endswith(TRAILER)
    rows, at = [], len(HEADER)
    while (count := struct.unpack_from(">h", data, at)[0]) != -1:
        at += 2
        fields = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", data, at)
            fields.append(data[at + 4 : at + 4 + length])
            at += 4 + length
        rows.append(fields)
    assert at + 2 == len(data)
    return rows


def test_each_field_is_in_its_types_binary_form():
    row = Row(EVENT_ID.bytes, SESSION_ID.bytes, 17, 42, "smart_tv", "heartbeat", 30_000, EVENT_MS, EVENT_MS + 1500)
    count, data = copy_binary([row])
    assert count == 1
    (fields,) = read_fields(data)
    assert [uuid.UUID(bytes=fields[0]), uuid.UUID(bytes=fields[1])] == [EVENT_ID, SESSION_ID]
    assert [struct.unpack(">i", field)[0] for field in fields[2:4]] == [17, 42]
    assert [field.decode() for field in fields[4:6]] == ["smart_tv", "heartbeat"]
    assert struct.unpack(">q", fields[6])[0] == 30_000
    # timestamptz: microseconds since 2000-01-01 00:00 UTC.
    micros = [struct.unpack(">q", field)[0] for field in fields[7:]]
    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert [since.timestamp() + value / 1e6 for value in micros] == [EVENT_MS / 1000, EVENT_MS / 1000 + 1.5]


def test_the_earliest_time_the_publisher_accepts_is_zero_and_texts_of_any_length_fit():
    rows = [
        Row(EVENT_ID.bytes, SESSION_ID.bytes, 1, 1, device, event, 0, 946_684_800_000, 946_684_800_000)
        for device, event in (("phone", "start"), ("streaming_stick", "resume"), ("tablet", "stop"))
    ]
    count, data = copy_binary(iter(rows))
    assert count == 3
    read = read_fields(data)
    assert [(fields[4].decode(), fields[5].decode()) for fields in read] == [
        ("phone", "start"),
        ("streaming_stick", "resume"),
        ("tablet", "stop"),
    ]
    assert {fields[7] for fields in read} == {bytes(8)}


def test_no_rows_is_a_valid_empty_copy():
    assert copy_binary([]) == (0, HEADER + TRAILER)
