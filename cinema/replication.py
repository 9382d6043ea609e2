"""Has the subscriber caught up with the publisher? Answered with WAL positions.

The publisher's current WAL position is the target; the subscription has caught up
once its replication slot's confirmed_flush_lsn reaches it, i.e. the subscriber has
applied and durably flushed everything committed up to then. Positions only grow,
so this holds even while new writes keep arriving.
"""

from __future__ import annotations

import logging
import threading
import time

from cinema import db
from cinema.names import SUBSCRIPTION
from cinema.retrying import poll
from cinema.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
# A wait longer than this is worth a line: the caller may sit here for its whole timeout.
ANNOUNCE_AFTER_SECONDS = 1.0


class ReplicationTimeout(TimeoutError):
    pass


class SubscriptionMissing(RuntimeError):
    """The publisher has no replication slot for the subscription: nothing will ever arrive."""


def publisher_lsn(settings: Settings) -> str:
    with db.closing(db.monitor(settings, "publisher")) as connection:
        return str(db.scalar(connection, "SELECT pg_current_wal_lsn()"))


def remaining_bytes(settings: Settings, target_lsn: str) -> int | None:
    """Bytes of WAL between what the subscriber confirmed and `target_lsn` (0 once
    caught up), or None if the subscription's slot does not exist."""
    with db.closing(db.monitor(settings, "publisher")) as connection:
        value = db.scalar(
            connection,
            "SELECT greatest(pg_wal_lsn_diff(%s::pg_lsn, confirmed_flush_lsn), 0)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (target_lsn, SUBSCRIPTION),
        )
    return None if value is None else int(value)


def wait_for_subscriber(
    settings: Settings,
    timeout_seconds: float = 120.0,
    target_lsn: str | None = None,
    stop: threading.Event | None = None,
) -> float:
    """Block until the subscriber has everything the publisher committed before the
    call (or up to `target_lsn`), or until `stop` is set; return the seconds it took."""
    target = target_lsn or publisher_lsn(settings)
    began = time.monotonic()
    remaining: int | None = None
    announced = False

    def caught_up() -> bool:
        nonlocal remaining, announced
        remaining = remaining_bytes(settings, target)
        if remaining is None:
            raise SubscriptionMissing(
                f"the publisher has no replication slot {SUBSCRIPTION}; run `cinema stack up` to recreate it"
            )
        if remaining and not announced and time.monotonic() - began >= ANNOUNCE_AFTER_SECONDS:
            announced = True
            log.info(
                "waiting for the subscriber to receive what the publisher committed",
                extra={"behind_bytes": remaining, "publisher_lsn": target, "timeout_seconds": timeout_seconds},
            )
        return remaining == 0

    def behind() -> ReplicationTimeout:
        return ReplicationTimeout(
            f"after {timeout_seconds:.0f}s the subscription {SUBSCRIPTION} is {remaining} WAL bytes behind "
            f"publisher position {target}; check `cinema stack status` and the subscriber's log"
        )

    poll(caught_up, timeout_seconds=timeout_seconds, interval=POLL_SECONDS, timed_out=behind, stop=stop)
    return time.monotonic() - began
