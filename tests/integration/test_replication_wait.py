"""Waiting for the subscriber (`cinema.replication`, which the DAG's sensor and
`cinema load --until-caught-up` use): without the slot it fails at once naming the fix;
behind for too long it times out saying how far behind it is. Both reach the user as
their own one-line message."""

from __future__ import annotations

import re
import time

import pytest

from cinema import db, replication
from cinema.cli import describe_failure
from cinema.names import SUBSCRIPTION

pytestmark = pytest.mark.integration

# A WAL position the publisher of a test will never reach.
FAR_AHEAD = "FFFF/0"


def lsn_bytes(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_waiting_without_the_slot_names_the_fix(stack, monkeypatch):
    monkeypatch.setattr(replication, "SUBSCRIPTION", "cinema_subscription_gone")
    began = time.monotonic()

    with pytest.raises(replication.SubscriptionMissing) as missing:
        replication.wait_for_subscriber(stack.settings, timeout_seconds=60)

    assert time.monotonic() - began < 5, "a missing slot is final: no reason to wait for it"
    assert str(missing.value) == (
        "the publisher has no replication slot cinema_subscription_gone; run `cinema stack up` to recreate it"
    )
    assert describe_failure(missing.value, stack.settings) == str(missing.value)


def test_waiting_too_long_says_how_far_behind_the_subscriber_is(stack):
    with db.closing(db.admin(stack.settings, "publisher")) as connection:
        confirmed = str(
            db.scalar(
                connection,
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
                (SUBSCRIPTION,),
            )
        )
    began = time.monotonic()

    with pytest.raises(replication.ReplicationTimeout) as timed_out:
        replication.wait_for_subscriber(stack.settings, timeout_seconds=0.5, target_lsn=FAR_AHEAD)

    with db.closing(db.admin(stack.settings, "publisher")) as connection:
        current = str(db.scalar(connection, "SELECT pg_current_wal_lsn()"))

    assert 0.5 <= time.monotonic() - began < 5
    message = str(timed_out.value)
    found = re.fullmatch(
        rf"after 0s the subscription {SUBSCRIPTION} is (\d+) WAL bytes behind publisher position {FAR_AHEAD}; "
        r"check `cinema stack status` and the subscriber's log",
        message,
    )
    assert found, message
    # Measured from what the subscriber confirmed, which lies between the positions read before and after.
    assert (
        lsn_bytes(FAR_AHEAD) - lsn_bytes(current) <= int(found.group(1)) <= lsn_bytes(FAR_AHEAD) - lsn_bytes(confirmed)
    )
    assert describe_failure(timed_out.value, stack.settings) == message
