"""ClickHouse clients: embedded (chdb) or a server over HTTP, one interface for both.

chdb runs ClickHouse inside this process, and only one process may open a given
data directory at a time (chdb itself fails with "Cannot lock file .../status").
`open_warehouse` therefore takes an exclusive lock file beside the directory first:
a second process waits for its turn (up to CLICKHOUSE_CHDB_LOCK_TIMEOUT_SECONDS, or
until its stop event is set) and, if the turn never comes, fails with a message
naming the holder, instead of chdb's low-level error. The lock is released when the client is closed or the
process exits, even by kill -9 (the kernel drops flock locks with the process).
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from cinema.retrying import Stopped, poll
from cinema.settings import Settings, Warehouse

LOCK_POLL_SECONDS = 0.2


class WarehouseBusy(RuntimeError):
    """Another process holds the embedded warehouse."""


def lock_path(warehouse: Warehouse) -> Path:
    return warehouse.chdb_path.with_name(warehouse.chdb_path.name + ".lock")


def lock_holder(warehouse: Warehouse) -> str:
    try:
        return lock_path(warehouse).read_text().strip() or "an unknown process"
    except FileNotFoundError:
        return "nobody"


class _ProcessLock:
    """One flock per process, shared by every client the process opens."""

    handle: IO[str] | None = None
    users = 0

    @classmethod
    def acquire(cls, warehouse: Warehouse, timeout_seconds: float, stop: threading.Event | None) -> None:
        if cls.handle is None:
            path = lock_path(warehouse)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")

            def taken() -> bool:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            def busy() -> WarehouseBusy:
                return WarehouseBusy(
                    f"the embedded warehouse {warehouse.chdb_path} is in use by {lock_holder(warehouse)} "
                    f"(waited {timeout_seconds:.0f}s). Only one process can open it: stop that process, "
                    "or run ClickHouse as a server (CLICKHOUSE_INTERFACE=http)."
                )

            try:
                if not poll(
                    taken, timeout_seconds=timeout_seconds, interval=LOCK_POLL_SECONDS, timed_out=busy, stop=stop
                ):
                    raise Stopped(f"stopped waiting for the embedded warehouse, in use by {lock_holder(warehouse)}")
            except BaseException:
                handle.close()
                raise
            handle.seek(0)
            handle.truncate()
            command = " ".join(os.path.basename(arg) if i == 0 else arg for i, arg in enumerate(sys.argv))
            handle.write(f"pid {os.getpid()} ({command}) since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
            handle.flush()
            cls.handle = handle
        cls.users += 1

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users == 0 and cls.handle is not None:
            cls.handle.seek(0)
            cls.handle.truncate()
            fcntl.flock(cls.handle, fcntl.LOCK_UN)
            cls.handle.close()
            cls.handle = None


def connect(
    settings: Settings,
    *,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    lock_timeout_seconds: float | None = None,
    client_settings: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> Client:
    """A client for the configured warehouse. Embedded: takes the process lock, which
    `close()` on the returned client gives back; waiting for it, `stop` set raises Stopped."""
    warehouse = settings.warehouse
    if warehouse.interface == "http":
        return clickhouse_connect.get_client(
            host=warehouse.host,
            port=warehouse.port,
            username=user or warehouse.admin_user,
            password=password if password is not None else warehouse.admin_password,
            database=database or "default",
            settings=client_settings,
        )
    timeout = warehouse.lock_timeout_seconds if lock_timeout_seconds is None else lock_timeout_seconds
    _ProcessLock.acquire(warehouse, timeout, stop)
    try:
        warehouse.chdb_path.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(
            interface="chdb", path=str(warehouse.chdb_path), database=database, settings=client_settings
        )
    except BaseException:
        _ProcessLock.release()
        raise
    original_close = client.close
    released = False

    def close() -> None:
        nonlocal released
        try:
            original_close()
        finally:
            if not released:
                released = True
                _ProcessLock.release()

    client.close = close  # type: ignore[method-assign]
    return client


@contextmanager
def warehouse_client(settings: Settings, **options: Any) -> Iterator[Client]:
    client = connect(settings, **options)
    try:
        yield client
    finally:
        client.close()
