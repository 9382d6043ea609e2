"""Terminal rendering shared by the CLI commands."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

# Logs and CI keep long lines better than wrapped tables: wide when not a terminal.
console = Console(width=None if sys.stdout.isatty() else 140)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    console.print(table)


def print_status(report: Mapping[str, object]) -> None:
    rows = []
    for side in ("publisher", "subscriber"):
        entry = report[side]
        assert isinstance(entry, Mapping)
        state = "running" if entry.get("running") else ("reachable" if entry.get("reachable") else "down")
        rows.append((side, entry["address"], state, entry.get("events", entry.get("error"))))
    print_table("PostgreSQL", ("server", "address", "state", "events"), rows)
    replication = report["replication"]
    assert isinstance(replication, Mapping)
    print_table("Replication", ("field", "value"), sorted(replication.items()))
    warehouse = report.get("warehouse")
    if isinstance(warehouse, Mapping):
        fields: list[tuple[str, object]] = []
        for name, value in warehouse.items():
            if isinstance(value, Mapping):
                fields.extend((f"{name}.{key}", item) for key, item in value.items())
            else:
                fields.append((name, value))
        print_table("Warehouse", ("field", "value"), fields)
