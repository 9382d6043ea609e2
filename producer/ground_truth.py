"""The ground-truth file: what really happened in every session the producer finished.

One CSV row per session whose events were all delivered. Values are in the marts'
units: milliseconds, and the completion ratio as the exact float the marts compute
(max position / runtime). Orphan fragments are listed with their kind and no truth.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO

from producer.stream import SessionRecord

EPOCH_DAY = date(1970, 1, 1)

COLUMNS = (
    "session_id",
    "user_id",
    "movie_id",
    "device_type",
    "dirty_kind",
    "started_at",
    "ended_at",
    "watched_ms",
    "max_position_ms",
    "pauses",
    "seeks",
    "events",
    "completion",
    "completed",
    "end_reason",
)


@lru_cache(maxsize=4096)
def _day_text(epoch_day: int) -> str:
    # isoformat, not strftime("%Y"), which does not zero-pad years below 1000 here:
    # PostgreSQL reads "1-01-01" as 2001.
    return (EPOCH_DAY + timedelta(days=epoch_day)).isoformat()


def timestamp_text(epoch_ms: int) -> str:
    """ISO 8601 in UTC with milliseconds; arithmetic instead of strftime per session."""
    seconds, millis = divmod(epoch_ms, 1000)
    day, second_of_day = divmod(seconds, 86_400)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{_day_text(day)} {hour:02d}:{minute:02d}:{second:02d}.{millis:03d}+00"


@dataclass
class GroundTruthWriter:
    """Writes to a temporary file and renames on close, so a killed run leaves
    either the previous complete file or none. The temporary file is the process's
    own: two identical generations at once each write, and rename, a whole file."""

    path: Path
    sessions: int = 0
    _handle: IO[str] | None = field(default=None, init=False)
    _writer: csv.DictWriter[str] | None = field(default=None, init=False)

    def __enter__(self) -> GroundTruthWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial").open("w", newline="")
        self._writer = csv.DictWriter(self._handle, COLUMNS)
        self._writer.writeheader()
        return self

    def __call__(self, record: SessionRecord) -> None:
        assert self._writer is not None
        row: dict[str, object] = {
            "session_id": record.session_id,
            "user_id": record.user_id,
            "movie_id": record.movie_id,
            "device_type": record.device_type,
            "dirty_kind": record.dirty_kind or "",
        }
        truth = record.truth
        if truth is not None:
            row |= {
                "started_at": timestamp_text(truth.started_ms),
                "ended_at": timestamp_text(truth.ended_ms),
                "watched_ms": truth.watched_ms,
                "max_position_ms": truth.max_position_ms,
                "pauses": truth.pauses,
                "seeks": truth.seeks,
                "events": truth.events,
                "completion": repr(truth.completion),
                "completed": int(truth.completed),
                "end_reason": truth.end_reason,
            }
        self._writer.writerow(row)
        self.sessions += 1

    def __exit__(self, *exc: object) -> None:
        assert self._handle is not None
        self._handle.close()
        if exc[0] is None:
            os.replace(self._handle.name, self.path)
        else:
            os.unlink(self._handle.name)
