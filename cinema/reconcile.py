"""`cinema check`: every stage holds the same events, none lost, none doubled.

Meant to run when the pipeline is quiet (as the DAG's `reconcile` task does, after
its waits): the publisher, the subscriber and ClickHouse's raw table must hold the
same number of event rows, the raw table each publisher id once, and the marts must
account for every raw row in exactly one session.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from cinema import db
from cinema.report import MARTS_DATABASE
from cinema.settings import Settings
from cinema.warehouse import warehouse_client


@dataclass(frozen=True)
class Check:
    name: str
    expected: int
    actual: int

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


def reconcile(settings: Settings) -> list[Check]:
    publisher = db.count_events(settings, "publisher")
    subscriber = db.count_events(settings, "subscriber")
    raw = settings.warehouse.raw_database
    with warehouse_client(settings) as client:
        raw_rows, raw_ids = client.query(f"SELECT count(), uniqExact(id) FROM {raw}.viewing_events").result_rows[0]
        accounted, sessions, distinct_sessions = client.query(
            "SELECT sum(events + duplicate_deliveries), count(), uniqExact(session_id) "
            f"FROM {MARTS_DATABASE}.viewing_sessions"
        ).result_rows[0]
        raw_sessions = client.query(f"SELECT uniqExact(session_id) FROM {raw}.viewing_events").result_rows[0][0]
    return [
        Check("subscriber rows = publisher rows (replication)", publisher, subscriber),
        Check("raw rows = subscriber rows (loader)", subscriber, int(raw_rows)),
        Check("raw distinct ids = raw rows (exactly once)", int(raw_rows), int(raw_ids)),
        Check("rows in viewing_sessions = raw rows (marts)", int(raw_rows), int(accounted)),
        Check("viewing_sessions rows = raw sessions", int(raw_sessions), int(sessions)),
        Check("viewing_sessions rows = distinct sessions", int(sessions), int(distinct_sessions)),
    ]


@click.command("check")
def check() -> None:
    """Reconcile counts across publisher, subscriber, ClickHouse raw and marts; exit 1 on any mismatch."""
    from cinema.cli import settings_from_context
    from cinema.console import print_table

    checks = reconcile(settings_from_context())
    print_table(
        "Reconciliation",
        ("check", "expected", "actual", "result"),
        [(c.name, f"{c.expected:,}", f"{c.actual:,}", "ok" if c.ok else "MISMATCH") for c in checks],
    )
    failed = [c for c in checks if not c.ok]
    if failed:
        raise click.ClickException("; ".join(f"{c.name}: expected {c.expected:,}, found {c.actual:,}" for c in failed))
