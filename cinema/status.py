"""`cinema stack status`: what each part of the pipeline reports, as plain data.

Above the stages, because it asks each of them: the engines whether their servers
run, the subscriber how replication goes, the loader what it has loaded.
"""

from __future__ import annotations

import psycopg2

from cinema import db
from cinema.names import SUBSCRIPTION
from cinema.settings import Settings
from cinema.stack import ServerFiles, is_running


def status(settings: Settings) -> dict[str, object]:
    """Servers, event counts, subscription state and replication lag, as plain data."""
    report: dict[str, object] = {}
    for side, server in (("publisher", settings.publisher), ("subscriber", settings.subscriber)):
        files = ServerFiles.of(settings, server)
        entry: dict[str, object] = {"address": f"{server.host}:{server.port}", "running": is_running(files)}
        try:
            entry["events"] = db.count_events(settings, side)
            entry["reachable"] = True
        except psycopg2.OperationalError as error:
            entry["reachable"] = False
            entry["error"] = str(error).strip().splitlines()[0]
        report[side] = entry
    report["replication"] = {**replication_state(settings), "loading_stall": loading_stall(settings)}
    report["warehouse"] = warehouse_state(settings)
    return report


def loading_stall(settings: Settings) -> str:
    """The subscriber's oldest open transaction, if older than LOADER_STALL_SECONDS: it
    pins xmin, and the loader loads nothing committed after it began."""
    from loader.source import oldest_open_transaction

    try:
        with db.closing(db.monitor(settings, "subscriber")) as connection:
            blocker = oldest_open_transaction(connection)
    except psycopg2.OperationalError as error:
        return f"unknown: {str(error).strip().splitlines()[0]}"
    if blocker is None or blocker.seconds < settings.loader.stall_seconds:
        return "none"
    return f"xmin held by {blocker.describe()}"


def warehouse_state(settings: Settings) -> dict[str, object]:
    """Raw row counts and the loader's watermark, if the warehouse opens without waiting."""
    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    from cinema.warehouse import WarehouseBusy, lock_holder, warehouse_client
    from loader.raw import progress

    warehouse = settings.warehouse
    if warehouse.interface == "chdb" and not warehouse.chdb_path.exists():
        return {"state": "not created yet"}
    try:
        with warehouse_client(settings, lock_timeout_seconds=0) as client:
            return {"state": "open", **progress(client, warehouse.raw_database)}
    except WarehouseBusy:
        return {"state": f"busy: {lock_holder(warehouse)}"}
    except ClickHouseError as error:
        return {"state": "unavailable", "error": str(error).strip().splitlines()[0]}


def replication_state(settings: Settings) -> dict[str, object]:
    try:
        with db.closing(db.monitor(settings, "subscriber")) as subscriber, subscriber.cursor() as cursor:
            cursor.execute(
                "SELECT s.subenabled, count(st.pid) FILTER (WHERE st.pid IS NOT NULL),"
                " max(st.latest_end_time) "
                "FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid "
                "WHERE s.subname = %s GROUP BY s.subenabled",
                (SUBSCRIPTION,),
            )
            row = cursor.fetchone()
        with db.closing(db.monitor(settings, "publisher")) as publisher, publisher.cursor() as cursor:
            cursor.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,"
                " (SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication"
                "   WHERE application_name = %s LIMIT 1) "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (SUBSCRIPTION, SUBSCRIPTION),
            )
            lag = cursor.fetchone()
    except psycopg2.OperationalError as error:
        return {"state": "unreachable", "error": str(error).strip().splitlines()[0]}
    if row is None:
        return {"state": "missing"}
    enabled, workers, latest = row
    return {
        "state": "streaming" if enabled and workers else ("enabled" if enabled else "disabled"),
        "apply_workers": workers,
        "last_message_at": latest.isoformat() if latest else None,
        "lag_bytes": lag[0] if lag else None,
        "replay_lag_seconds": float(lag[1]) if lag and lag[1] is not None else None,
    }
