"""Writing to the publisher: reference data, then events in chunks.

Each chunk is one transaction: a COPY of its events plus a `producer_batches` row
naming it. Rerunning the same generation skips chunks already committed, and a
chunk whose commit raced with another writer (or whose acknowledgement was lost)
fails on that row's primary key and is rolled back whole: events are written
exactly once even when the producer is killed and restarted.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
from psycopg2.extras import execute_values

from cinema.db import Connection
from cinema.retrying import Backoff, retry
from producer.catalog import Movie, User

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "event_id",
    "session_id",
    "user_id",
    "movie_id",
    "device_type",
    "event_type",
    "position_ms",
    "event_time",
)
# The producer stamps each row with its (simulated) arrival, so lateness is in the data
# whoever commits first; without it the publisher's default is its transaction's now().
ROW_COLUMNS = (*EVENT_COLUMNS, "received_at")
COPY_EVENTS = f"COPY viewing_events ({', '.join(ROW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# A lost connection is retried after 0.5 s, doubling to 30 s, seven times (about a minute).
RETRY_FIRST_DELAY_SECONDS, RETRY_MAX_DELAY_SECONDS, RETRIES = 0.5, 30.0, 7


def ensure_reference_data(connection: Connection, users: Sequence[User], movies: Sequence[Movie]) -> None:
    with connection.cursor() as cursor:
        execute_values(
            cursor,
            "INSERT INTO movies (movie_id, title, release_year, genre, runtime_seconds) VALUES %s "
            "ON CONFLICT (movie_id) DO NOTHING",
            [(m.movie_id, m.title, m.release_year, m.genre, m.runtime_seconds) for m in movies],
        )
        execute_values(
            cursor,
            "INSERT INTO users (user_id, display_name, country_code, utc_offset_minutes, plan, signed_up_at) "
            "VALUES %s ON CONFLICT (user_id) DO NOTHING",
            [
                (
                    u.user_id,
                    u.display_name,
                    u.country.code,
                    u.country.utc_offset_minutes,
                    u.plan,
                    u.signed_up_at,
                )
                for u in users
            ],
            page_size=1000,
        )
    connection.commit()


def committed_chunks(connection: Connection, run_key: str) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT chunk_no FROM producer_batches WHERE run_key = %s", (run_key,))
        chunks = {row[0] for row in cursor.fetchall()}
    connection.commit()
    return chunks


@dataclass(frozen=True)
class Chunk:
    number: int
    rows: int
    # The rows in binary COPY format (producer/binary_copy.py).
    data: bytes


def write_chunk(connection: Connection, run_key: str, chunk: Chunk) -> bool:
    """Commit one chunk; False if it was already committed."""
    try:
        with connection.cursor() as cursor:
            cursor.copy_expert(COPY_EVENTS, io.BytesIO(chunk.data), size=1 << 20)
            cursor.execute(
                "INSERT INTO producer_batches (run_key, chunk_no, events) VALUES (%s, %s, %s)",
                (run_key, chunk.number, chunk.rows),
            )
        connection.commit()
    except psycopg2.errors.UniqueViolation:
        connection.rollback()
        return False
    return True


class ChunkWriters:
    """K threads, each with its own connection and transaction, committing chunks
    concurrently (which is what makes commit order differ from id order)."""

    def __init__(self, connect: Callable[[], Connection], run_key: str, writers: int) -> None:
        self._connect = connect
        self._run_key = run_key
        self._queue: queue.Queue[Chunk | None] = queue.Queue(maxsize=writers * 2)
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.rows_written = 0
        self.chunks_skipped = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"writer-{number}", daemon=True) for number in range(writers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, chunk: Chunk) -> None:
        while True:
            if self._errors:
                raise self._errors[0]
            try:
                self._queue.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]

    def _work(self) -> None:
        connection: Connection | None = None
        try:
            while (chunk := self._queue.get()) is not None:
                connection = self._write_with_retries(connection, chunk)
        except BaseException as error:  # surfaced to the submitting thread
            self._errors.append(error)
            while self._queue.get() is not None:  # drain so submit() never blocks forever
                pass
        finally:
            if connection is not None:
                connection.close()

    def _write_with_retries(self, connection: Connection | None, chunk: Chunk) -> Connection:
        current = connection

        def write() -> tuple[Connection, bool]:
            nonlocal current
            if current is None or current.closed:
                current = self._connect()
            return current, write_chunk(current, self._run_key, chunk)

        def reconnect(error: Exception, failures: int, delay: float) -> None:
            # Transient: the server restarted or the network blinked. The chunk's
            # bookkeeping row makes the retry safe whether or not the commit landed.
            nonlocal current
            log.warning("chunk %d: %s; retry %d in %.1fs", chunk.number, str(error).strip(), failures, delay)
            current = None

        written_on, written = retry(
            write,
            retryable=lambda error: isinstance(error, psycopg2.OperationalError),
            backoff=Backoff(RETRY_FIRST_DELAY_SECONDS, RETRY_MAX_DELAY_SECONDS, tries=RETRIES),
            on_retry=reconnect,
        )
        with self._lock:
            if written:
                self.rows_written += chunk.rows
            else:
                self.chunks_skipped += 1
        return written_on
