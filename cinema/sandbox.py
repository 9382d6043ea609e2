"""A throwaway embedded stack: its own state folder, free loopback ports, fresh secrets.

Used by the integration tests and by `make bench`, which must never touch the
user's own stack (`.cinema/`, ports 55432/55433).
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from cinema.envfile import new_secret


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def new_state_dir(prefix: str) -> Path:
    """A private (0700) folder, like a newcomer's `mktemp -d` or `/root`."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def environment(state_dir: Path) -> dict[str, str]:
    """Every setting a stack needs, as environment variables."""

    return {
        "CINEMA_STATE_DIR": str(state_dir),
        "CINEMA_LOG_FORMAT": "text",
        "POSTGRES_PUBLICIST_USER": "cinema_admin",
        "POSTGRES_PUBLICIST_PASSWORD": new_secret(),
        "POSTGRES_PUBLICIST_DB": "cinema",
        "POSTGRES_PUBLICIST_HOST": "127.0.0.1",
        "POSTGRES_PUBLICIST_PORT": str(free_port()),
        "POSTGRES_SUBSCRIPTION_USER": "cinema_admin",
        "POSTGRES_SUBSCRIPTION_PASSWORD": new_secret(),
        "POSTGRES_SUBSCRIPTION_DB": "cinema",
        "POSTGRES_SUBSCRIPTION_HOST": "127.0.0.1",
        "POSTGRES_SUBSCRIPTION_PORT": str(free_port()),
        "POSTGRES_PRODUCER_PASSWORD": new_secret(),
        "POSTGRES_REPLICATION_PASSWORD": new_secret(),
        "POSTGRES_LOADER_PASSWORD": new_secret(),
        "POSTGRES_MONITOR_PASSWORD": new_secret(),
        "CLICKHOUSE_INTERFACE": "chdb",
        "CLICKHOUSE_CHDB_PATH": str(state_dir / "warehouse"),
        "CLICKHOUSE_DB": "cinema_raw",
        "LOADER_METRICS_PORT": str(free_port()),
    }
