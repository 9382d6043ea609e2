"""`cinema check`: every stage holds the same events, none lost, none doubled.

Meant to run when the pipeline is quiet (as the DAG's `reconcile` task does, after
its waits). Every row is accounted for where it went: the subscriber holds the
publisher's rows; the loader put each in ClickHouse's raw table once or quarantined
it; dbt counted each raw row in exactly one session or listed it in
excluded_events. A stage not built yet (no raw tables, no marts) is shown as such
and is not a discrepancy.
"""

from __future__ import annotations

from dataclasses import dataclass

import click
from clickhouse_connect.driver.client import Client

from cinema import db
from cinema.names import MARTS_DATABASE, QUARANTINE_TABLE
from cinema.settings import Settings
from cinema.warehouse import warehouse_client


@dataclass(frozen=True)
class Check:
    name: str
    # None: a stage this check needs is not built yet.
    expected: int | None
    actual: int | None
    # What was set aside along the way, so that a sum can be read.
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.expected is None or self.actual is None:
            return None
        return self.expected == self.actual

    @property
    def result(self) -> str:
        return {True: "ok", False: "MISMATCH", None: "not built yet"}[self.ok]


def _tables(client: Client, database: str) -> set[str]:
    result = client.query(
        "SELECT name FROM system.tables WHERE database = {database:String}", parameters={"database": database}
    )
    return {row[0] for row in result.result_rows}


def _number(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def reconcile(settings: Settings) -> list[Check]:
    publisher = db.count_events(settings, "publisher")
    subscriber = db.count_events(settings, "subscriber")
    raw = settings.warehouse.raw_database
    raw_rows = raw_ids = quarantined = quarantine_rows = raw_sessions = None
    accounted = excluded = sessions = distinct_sessions = None
    with warehouse_client(settings) as client:
        raw_tables = _tables(client, raw)
        if {"viewing_events", QUARANTINE_TABLE} <= raw_tables:
            raw_rows, raw_ids = client.query(f"SELECT count(), uniqExact(id) FROM {raw}.viewing_events").result_rows[0]
            # Events are immutable, so each quarantined event has one row (a reference
            # row may have several: one per version the publisher sent).
            quarantined, quarantine_rows = client.query(
                f"SELECT uniqExact(row_key), count() FROM {raw}.{QUARANTINE_TABLE} WHERE table_name = 'viewing_events'"
            ).result_rows[0]
        marts = _tables(client, MARTS_DATABASE)
        if raw_rows is not None and {"viewing_sessions", "excluded_events"} <= marts:
            accounted, sessions, distinct_sessions = client.query(
                "SELECT sum(events + duplicate_deliveries), count(), uniqExact(session_id) "
                f"FROM {MARTS_DATABASE}.viewing_sessions"
            ).result_rows[0]
            excluded = _number(client, f"SELECT count() FROM {MARTS_DATABASE}.excluded_events")
            # Sessions with at least one delivery that counts.
            raw_sessions = _number(
                client,
                f"SELECT uniqExact(session_id) FROM {raw}.viewing_events "
                f"WHERE id NOT IN (SELECT delivery_id FROM {MARTS_DATABASE}.excluded_events)",
            )

    def plus(left: int | None, right: int | None) -> int | None:
        return None if left is None or right is None else int(left) + int(right)

    def whole(value: int | None) -> int | None:
        return None if value is None else int(value)

    return [
        Check("subscriber rows = publisher rows (replication)", publisher, subscriber),
        Check(
            "raw rows + quarantined = subscriber rows (loader)",
            subscriber,
            plus(raw_rows, quarantined),
            f"{quarantined:,} quarantined ({raw}.{QUARANTINE_TABLE})" if quarantined else "",
        ),
        Check("raw distinct ids = raw rows (exactly once)", whole(raw_rows), whole(raw_ids)),
        Check(
            "quarantined distinct events = quarantined rows (exactly once)", whole(quarantine_rows), whole(quarantined)
        ),
        Check(
            "rows in viewing_sessions + excluded_events = raw rows (marts)",
            whole(raw_rows),
            plus(accounted, excluded),
            f"{excluded:,} excluded ({MARTS_DATABASE}.excluded_events)" if excluded else "",
        ),
        Check("viewing_sessions rows = raw sessions with a counted row", whole(raw_sessions), whole(sessions)),
        Check("viewing_sessions rows = distinct sessions", whole(sessions), whole(distinct_sessions)),
    ]


def _shown(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@click.command("check")
def check() -> None:
    """Reconcile counts across publisher, subscriber, ClickHouse raw and marts; exit 1 on any mismatch."""
    from cinema.console import print_table
    from cinema.context import settings_from_context

    checks = reconcile(settings_from_context())
    print_table(
        "Reconciliation",
        ("check", "expected", "actual", "result", "set aside"),
        [(c.name, _shown(c.expected), _shown(c.actual), c.result, c.note) for c in checks],
    )
    failed = [c for c in checks if c.ok is False]
    if failed:
        raise click.ClickException(
            "; ".join(f"{c.name}: expected {_shown(c.expected)}, found {_shown(c.actual)}" for c in failed)
        )
    if any(c.ok is None for c in checks):
        click.echo("Some stages are not built yet: `cinema load --until-caught-up`, then `cinema transform`.")
