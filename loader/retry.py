"""Which failures the loader retries, and how long it waits between tries.

Kept apart from the batch protocol (loader/protocol.py) so that the protocol reads without
them: only the listed ClickHouse codes and broken connections are transient; bad SQL,
missing rights and data ClickHouse rejects stop the loader at once. The waiting itself is
the shared helper's (cinema/retrying.py).
"""

from __future__ import annotations

import time

import clickhouse_connect.driver.exceptions as clickhouse_errors
import psycopg2

from cinema.retrying import Backoff, Clock

# Transient failures are retried with exponential backoff up to this delay, for as long
# as they last within the budget; then the loader stops with the last error.
RETRY_FIRST_DELAY_SECONDS = 0.5
RETRY_MAX_DELAY_SECONDS = 30.0
RETRY_BUDGET_SECONDS = 300.0

# ClickHouse error codes worth retrying: the network, a restarting server or subscriber,
# momentary overload. Everything else (bad SQL, rights, data it rejects) is fatal.
TRANSIENT_CLICKHOUSE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        614,  # POSTGRESQL_CONNECTION_FAILURE
        1000,  # POCO_EXCEPTION
    }
)
PERMANENT_MARKERS = ("authentication failed", "does not exist", "permission denied", "not enough privileges")


class SubscriberChanged(RuntimeError):
    """The subscriber restarted, or its xid horizon fell below the watermark, under a
    running loader: retried like a broken connection, and the next attach decides."""


def is_transient(error: BaseException) -> bool:
    message = str(error).lower()
    if any(marker in message for marker in PERMANENT_MARKERS):
        return False
    if isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError | SubscriberChanged):
        return True
    if isinstance(error, clickhouse_errors.Error):
        if error.code is None:
            # No server code: the HTTP transport failed (refused, reset, timed out).
            return isinstance(error, clickhouse_errors.OperationalError)
        # A subscriber restarting under a running pull surfaces as libpqxx's broken_connection.
        return error.code in TRANSIENT_CLICKHOUSE_CODES or (error.code == 1001 and "connection" in message)
    return False


def backoff(clock: Clock = time.monotonic) -> Backoff:
    """The loader's delays between tries: 0.5 s doubling to 30 s, for 300 s of failures in a row."""
    return Backoff(RETRY_FIRST_DELAY_SECONDS, RETRY_MAX_DELAY_SECONDS, budget_seconds=RETRY_BUDGET_SECONDS, clock=clock)
