"""The batch check on real PostgreSQL and chdb: whatever landed in ClickHouse that does not
match the subscriber stops the loader before the batch's record, and the next start
deletes what that batch left and loads it again, exactly once.

Each case tampers with what one pull landed, at the seam the loader pulls through
(`loader.raw.pull`): a row doubled, a row gone, a user key the subscriber never had,
timestamps an hour off (as a subscriber session outside UTC would make them). A row
ClickHouse cannot hold is quarantined instead, with an ERROR line of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from cinema import db
from cinema.names import BATCHES_TABLE
from cinema.replication import wait_for_subscriber
from cinema.warehouse import warehouse_client
from loader import raw, service
from loader.schema import USERS, VIEWING_EVENTS, RawTable
from loader.source import xid_window
from tests.integration.conftest import RunningStack
from tests.integration.test_loader import (
    OWN_USER,
    assert_exactly_once,
    ensure_own_reference_rows,
    insert_events,
    own_warehouse,
    publisher_transaction,
    warehouse_query,
)

pytestmark = pytest.mark.integration

# A user the subscriber never had.
PHANTOM_USER = 990_099
# A user ClickHouse cannot hold until it is repaired.
UNLOADABLE_USER = 990_098

Tamper = Callable[[Client, int, int], None]


def double_one_event(client: Client, lo: int, hi: int) -> None:
    client.command(
        f"INSERT INTO cinema_raw.viewing_events SELECT * FROM cinema_raw.viewing_events "
        f"WHERE {xid_window(lo, hi)} ORDER BY id LIMIT 1"
    )


def lose_one_event(client: Client, lo: int, hi: int) -> None:
    client.command(
        f"DELETE FROM cinema_raw.viewing_events WHERE id = "
        f"(SELECT max(id) FROM cinema_raw.viewing_events WHERE {xid_window(lo, hi)})",
        settings={"lightweight_deletes_sync": 2},
    )


def add_a_phantom_user(client: Client, lo: int, hi: int) -> None:
    client.command(
        "INSERT INTO cinema_raw.users (user_id, display_name, country_code, utc_offset_minutes, plan, "
        f"signed_up_at, _xid) VALUES ({PHANTOM_USER}, 'Phantom', 'FR', 60, 'basic', now64(6), {int(lo)})"
    )


def shift_received_at_an_hour(client: Client, lo: int, hi: int) -> None:
    client.command(
        "ALTER TABLE cinema_raw.viewing_events UPDATE received_at = received_at + INTERVAL 1 HOUR "
        f"WHERE {xid_window(lo, hi)}",
        settings={"mutations_sync": 2},
    )


def tamper_after_pull(monkeypatch: pytest.MonkeyPatch, table: RawTable, tamper: Tamper) -> list[int]:
    """Make the next pull of `table` land something the subscriber does not hold; the
    returned list records the windows tampered with."""
    real_pull = raw.pull
    tampered: list[int] = []

    def pull(
        client: Client,
        source: raw.PullSource,
        fence: raw.Fence,
        pulled: RawTable,
        lo: int,
        hi: int,
        new_ids_within: tuple[int, int] | None = None,
    ) -> None:
        real_pull(client, source, fence, pulled, lo, hi, new_ids_within)
        if pulled.name == table.name and not tampered:
            tamper(client, lo, hi)
            tampered.append(lo)

    monkeypatch.setattr(raw, "pull", pull)
    return tampered


def committed(own: RunningStack) -> tuple[raw.Position | None, int]:
    with warehouse_client(own.settings) as client:
        return raw.position(client, "cinema_raw"), int(
            client.query(f"SELECT count() FROM cinema_raw.{BATCHES_TABLE}").result_rows[0][0]
        )


def loaded_up_to_date(stack: RunningStack, tmp_path: Path) -> RunningStack:
    """A warehouse of its own holding everything the shared subscriber has so far, so that
    the next batch holds only the test's own rows."""
    own = own_warehouse(stack, tmp_path)
    ensure_own_reference_rows(stack.settings)
    assert service.drain(own.settings).caught_up
    return own


def new_events_and_a_user_update(stack: RunningStack) -> list[int]:
    with publisher_transaction(stack.settings) as connection, connection.cursor() as cursor:
        ids = insert_events(cursor, 200)
        cursor.execute("UPDATE users SET plan = 'basic' WHERE user_id = %s", (OWN_USER,))
        connection.commit()
    wait_for_subscriber(stack.settings)
    return ids


@pytest.mark.parametrize(
    ("table", "tamper", "message"),
    [
        (VIEWING_EVENTS, double_one_event, r"viewing_events does not add up: the subscriber committed"),
        (VIEWING_EVENTS, lose_one_event, r"viewing_events does not add up: the subscriber committed"),
        (USERS, add_a_phantom_user, r"of users: ClickHouse holds 2 distinct user_ids, the subscriber had 1"),
    ],
    ids=["an event twice", "an event missing", "a user key the subscriber never had"],
)
def test_a_batch_that_does_not_add_up_stops_before_its_record(stack, tmp_path, monkeypatch, table, tamper, message):
    own = loaded_up_to_date(stack, tmp_path)
    before = committed(own)
    new_ids = new_events_and_a_user_update(stack)
    tampered = tamper_after_pull(monkeypatch, table, tamper)

    with pytest.raises(service.LoaderError, match=message) as stopped:
        service.drain(own.settings)

    assert tampered, "the tampered pull never ran"
    assert "The batch was not committed" in str(stopped.value)
    assert committed(own) == before
    monkeypatch.undo()
    assert service.drain(own.settings).caught_up
    assert_exactly_once(own.settings)
    assert set(new_ids) <= {
        int(row[0]) for row in warehouse_query(own.settings, "SELECT id FROM cinema_raw.viewing_events")
    }
    assert warehouse_query(own.settings, f"SELECT count() FROM cinema_raw.users WHERE user_id = {PHANTOM_USER}") == [
        (0,)
    ]


def test_timestamps_read_outside_utc_stop_the_batch(stack, tmp_path, monkeypatch):
    own = loaded_up_to_date(stack, tmp_path)
    before = committed(own)
    new_ids = new_events_and_a_user_update(stack)
    tamper_after_pull(monkeypatch, VIEWING_EVENTS, shift_received_at_an_hour)

    with pytest.raises(service.LoaderError, match=r"read received_at of event \d+ as \d+ µs") as stopped:
        service.drain(own.settings)

    message = str(stopped.value)
    assert "Run `ALTER ROLE cinema_loader SET TimeZone = 'UTC'` on the subscriber" in message
    assert "the batch was not committed" in message
    assert committed(own) == before
    monkeypatch.undo()
    assert service.drain(own.settings).caught_up
    assert_exactly_once(own.settings)
    with db.closing(db.loader(stack.settings)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, (extract(epoch FROM received_at) * 1000000)::bigint FROM viewing_events WHERE id = ANY(%s)",
            (new_ids,),
        )
        truth = dict(cursor.fetchall())
    landed = dict(
        warehouse_query(
            own.settings,
            "SELECT id, toUnixTimestamp64Micro(received_at) FROM cinema_raw.viewing_events "
            f"WHERE id IN ({', '.join(map(str, new_ids))})",
        )
    )
    assert landed == truth


def test_each_quarantined_row_gets_an_error_line_with_its_table_key_xid_and_reason(stack, tmp_path, caplog):
    own = loaded_up_to_date(stack, tmp_path)
    db.run_as_admin(
        stack.settings,
        "publisher",
        f"INSERT INTO users VALUES ({UNLOADABLE_USER}, 'Signed Up Forever', 'DE', 60, 'basic', 'infinity')",
    )
    wait_for_subscriber(stack.settings)
    caplog.set_level(logging.ERROR, logger="loader")
    caplog.clear()  # the lines of what the first load quarantined
    try:
        summary = service.drain(own.settings)
    finally:
        # Later modules load the shared servers whole and count their own quarantined rows.
        db.run_as_admin(
            stack.settings,
            "publisher",
            f"UPDATE users SET signed_up_at = '2026-01-01' WHERE user_id = {UNLOADABLE_USER}",
        )

    assert summary.quarantined == 1
    (record,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert record.getMessage() == "quarantined a row ClickHouse cannot hold"
    assert (record.table, record.key) == ("users", str(UNLOADABLE_USER))
    assert record.reason == "signed_up_at infinity is outside [1900-01-01 00:00:00, 2300-01-01 00:00:00) UTC"
    # The subscriber's xid, as recorded with the row.
    assert warehouse_query(
        own.settings, f"SELECT _xid FROM cinema_raw._quarantine WHERE row_key = '{UNLOADABLE_USER}'"
    ) == [(record.xid,)]
