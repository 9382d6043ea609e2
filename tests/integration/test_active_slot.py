"""`cinema stack up` on a subscriber without its subscription, while something else streams
from the publisher's slot `cinema_subscription`: postgres_init/apply.sh drops only an
inactive slot, so that consumer keeps its slot and its data, and `stack up` stops with one
line naming the slot, the consumer's walsender and the fix. Once the consumer is gone,
`stack up` takes the slot back.

It drops the subscription, so it runs on servers of its own.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator

import psycopg2
import psycopg2.extras
import pytest

from cinema import db
from cinema.names import SUBSCRIPTION
from cinema.replication import wait_for_subscriber
from cinema.settings import Settings
from tests.integration.conftest import RunningStack, running_stack
from tests.integration.test_loader import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slot_stack() -> Iterator[RunningStack]:
    with running_stack("cinema-slot-") as running:
        yield running


def slot_state(settings: Settings) -> tuple[bool, int | None] | None:
    """(active, active_pid) of the publisher's slot, or None if there is none."""
    with db.closing(db.admin(settings, "publisher")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = %s", (SUBSCRIPTION,))
        row = cursor.fetchone()
    return None if row is None else (bool(row[0]), row[1])


class SlotConsumer:
    """Another consumer streaming from the slot, as the replication role, acknowledging what it reads."""

    def __init__(self, settings: Settings) -> None:
        server = settings.publisher
        self._connection = psycopg2.connect(
            host=server.host,
            port=server.port,
            dbname=server.database,
            user="cinema_replicator",
            password=settings.roles.replication_password,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
        )
        self._cursor = self._connection.cursor()
        self._cursor.start_replication(
            slot_name=SUBSCRIPTION,
            decode=False,
            options={"proto_version": "4", "publication_names": "cinema_events,cinema_reference"},
        )
        self._stop = threading.Event()
        self.messages = 0
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        while not self._stop.is_set():
            message = self._cursor.read_message()
            if message is None:
                select.select([self._connection], [], [], 0.2)
                continue
            self.messages += 1
            self._cursor.send_feedback(flush_lsn=message.data_start)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._connection.close()


def test_an_active_slot_of_that_name_is_left_alone(slot_stack):
    settings = slot_stack.settings
    slot_stack.cinema("generate", "--events", "2000", "--seed", "6101")
    wait_for_subscriber(settings)
    # The subscriber loses its subscription but the publisher keeps the slot (as after a
    # rebuild of the subscriber), and another consumer streams from it.
    db.run_as_admin(
        settings,
        "subscriber",
        f"ALTER SUBSCRIPTION {SUBSCRIPTION} DISABLE",
        f"ALTER SUBSCRIPTION {SUBSCRIPTION} SET (slot_name = NONE)",
        f"DROP SUBSCRIPTION {SUBSCRIPTION}",
    )
    wait_until(lambda: slot_state(settings) == (False, None), 30, "the subscriber to let go of the slot")
    consumer = SlotConsumer(settings)
    try:
        wait_until(lambda: (slot_state(settings) or (False,))[0], 30, "the other consumer to stream from the slot")
        streaming = slot_state(settings)
        assert streaming is not None
        slot_stack.cinema("generate", "--events", "1000", "--seed", "6102")
        wait_until(lambda: consumer.messages > 0, 30, "the other consumer to receive the new events")

        refused = slot_stack.cinema("stack", "up", check=False)

        assert slot_state(settings) == streaming
        assert refused.returncode == 1
        assert "Traceback" not in refused.stderr
        (line,) = [line for line in refused.stderr.splitlines() if line.startswith("Error: ")]
        assert (
            f"the publisher's slot {SUBSCRIPTION} is in use by another consumer (walsender pid {streaming[1]})" in line
        )
        assert "it is left alone: stop that consumer" in line
        with db.closing(db.admin(settings, "subscriber")) as connection:
            assert db.scalar(connection, "SELECT count(*) FROM pg_subscription") == 0
    finally:
        consumer.close()

    wait_until(lambda: slot_state(settings) == (False, None), 30, "the other consumer to let go of the slot")
    # As in a rebuilt subscriber: the new subscription's initial copy fills empty tables.
    db.run_as_admin(settings, "subscriber", "TRUNCATE viewing_events, users, movies")
    slot_stack.cinema("stack", "up")
    assert (slot_state(settings) or (False,))[0]
    wait_for_subscriber(settings)
    counts = {side: db.count_events(settings, side) for side in ("publisher", "subscriber")}
    assert counts["subscriber"] == counts["publisher"] == 3000
