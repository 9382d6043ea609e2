"""Rows in PostgreSQL's binary COPY format, packed here rather than by a driver.

The format (PostgreSQL's `COPY` reference, "Binary Format"): an 11-byte signature, a
32-bit flags field and a 32-bit header-extension length; then per row a 16-bit field
count and, per field, a 32-bit length and the value in its type's binary form (a uuid
its 16 bytes, integers big-endian, a timestamptz microseconds since 2000-01-01 UTC); a
16-bit -1 ends the data. The server parses this much faster than text (no uuid or
timestamp parsing), and packing a row is one `struct` call, so both ends of the
producer's COPY get cheaper; why this is psycopg2 sending bytes rather than psycopg 3's
`write_row`: the README's dependency notes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from functools import cache

from producer.stream import Row

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
FIELDS = len(Row._fields)
POSTGRES_EPOCH_MS = 946_684_800_000


@cache
def _packer(device_type: str, event_type: str) -> tuple[Callable[..., bytes], bytes]:
    """One struct per (device, event type): the two texts sit side by side in the row, so
    they are packed as one prepared run of bytes with their lengths."""
    texts = b"".join(struct.pack(">i", len(text)) + text for text in (device_type.encode(), event_type.encode()))
    # count; uuid, uuid; int4, int4; the texts; int8 position; two timestamptz.
    return struct.Struct(f">hi16si16siiii{len(texts)}siqiqiq").pack, texts


def copy_binary(rows: Iterable[Row]) -> tuple[int, bytes]:
    """The rows as one binary COPY stream, and how many there were. Each row is packed as
    it comes, so a chunk's rows need not all be alive at once."""
    packed = [HEADER]
    for (
        event_id,
        session_id,
        user_id,
        movie_id,
        device_type,
        event_type,
        position_ms,
        event_time_ms,
        received_ms,
    ) in rows:
        pack, texts = _packer(device_type, event_type)
        packed.append(
            pack(
                FIELDS,
                16,
                event_id,
                16,
                session_id,
                4,
                user_id,
                4,
                movie_id,
                texts,
                8,
                position_ms,
                8,
                (event_time_ms - POSTGRES_EPOCH_MS) * 1000,
                8,
                (received_ms - POSTGRES_EPOCH_MS) * 1000,
            )
        )
    packed.append(TRAILER)
    return len(packed) - 2, b"".join(packed)
