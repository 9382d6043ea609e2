"""The one place that reads configuration.

Values come from the process environment first, then from a `.env` file in the
working directory (python-decouple's precedence). Every other module receives a
`Settings` object and never looks at the environment itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from decouple import Config, RepositoryEmpty, RepositoryEnv

WarehouseInterface = Literal["chdb", "http"]
LogFormat = Literal["text", "json"]


@dataclass(frozen=True)
class PostgresServer:
    """Where a PostgreSQL server listens and who administers it."""

    name: str
    host: str
    port: int
    database: str
    admin_user: str
    admin_password: str


@dataclass(frozen=True)
class Roles:
    """Passwords of the least-privilege roles that `postgres_init/` creates."""

    producer_password: str
    replication_password: str
    loader_password: str
    monitor_password: str


@dataclass(frozen=True)
class Warehouse:
    """ClickHouse: embedded (chdb, one process at a time) or a server over HTTP."""

    interface: WarehouseInterface
    chdb_path: Path
    host: str
    port: int
    admin_user: str
    admin_password: str
    loader_user: str
    loader_password: str
    raw_database: str
    # How ClickHouse itself reaches the subscriber for `postgresql()` pulls: the
    # loopback port in embedded mode, the service name on click_net in Compose.
    subscriber_address: str
    lock_timeout_seconds: float
    # The cluster (remote_servers) the raw tables and dbt's models are created on; empty:
    # a single server. README, "Scaling out past one machine".
    cluster: str


@dataclass(frozen=True)
class LoaderSettings:
    batch_max_rows: int
    batch_max_wait_seconds: float
    poll_interval_seconds: float
    metrics_host: str
    metrics_port: int
    # True where the loader runs as its own long-lived service (Compose): the
    # orchestrator then waits for it instead of draining with a second loader.
    runs_as_service: bool
    # Concurrent ClickHouse pulls a large batch is split into (PostgreSQL's COPY out is
    # one core per stream).
    pull_streams: int
    # How long xmin may stay pinned, with committed rows waiting behind it, before the
    # loader reports a stall.
    stall_seconds: float = 60.0


@dataclass(frozen=True)
class MetabaseSettings:
    """Metabase, and what `cinema metabase provision` sets up in it."""

    url: str
    admin_email: str
    # Empty until configured: only the provisioning command needs it, and it says so.
    admin_password: str
    # Metabase's ClickHouse user: read-only, SELECT on cinema_marts only. Metabase
    # reaches ClickHouse at the warehouse host and port (in Compose: clickhouse:8123).
    clickhouse_user: str
    clickhouse_password: str


@dataclass(frozen=True)
class DbtSettings:
    """dbt's ClickHouse user on a server (embedded chdb has no users)."""

    clickhouse_user: str
    clickhouse_password: str


@dataclass(frozen=True)
class Settings:
    # The .env file the values came from, if any (the environment wins over it).
    env_file: Path | None
    state_dir: Path
    publisher: PostgresServer
    subscriber: PostgresServer
    roles: Roles
    # How the subscriber's apply worker reaches the publisher.
    publisher_address_for_subscriber: tuple[str, int]
    warehouse: Warehouse
    loader: LoaderSettings
    log_format: LogFormat
    metabase: MetabaseSettings
    dbt: DbtSettings
    # How often `cinema live` and the cinema_refresh DAG refresh the marts while events stream.
    marts_refresh_seconds: float

    @property
    def ground_truth_dir(self) -> Path:
        return self.state_dir / "ground_truth"


def env_file_entries(settings: Settings) -> dict[str, str]:
    """The entries of the .env file the settings came from, to hand on to processes
    that start elsewhere (Airflow's task processes run in other directories)."""
    if settings.env_file is None:
        return {}
    return dict(RepositoryEnv(str(settings.env_file)).data)


# Start to start: mart freshness p95 is about 0.95 x this plus one refresh (README, "Live mode").
MARTS_REFRESH_SECONDS_DEFAULT = 30.0


def _positive_seconds(config: Config, name: str, default: float) -> float:
    value: float = config(name, default=default, cast=float)
    if value <= 0:
        raise ValueError(f"{name} must be more than 0 seconds, got {value}")
    return value


def marts_refresh_seconds_from_environment() -> float:
    """MARTS_REFRESH_SECONDS from the process environment alone: for DAG files, which
    Airflow parses over and over and which must do no file I/O when imported (Airflow's
    environment carries the project's settings; unset, the default)."""
    return _positive_seconds(Config(RepositoryEmpty()), "MARTS_REFRESH_SECONDS", MARTS_REFRESH_SECONDS_DEFAULT)


def load_settings(env_file: Path | None = None) -> Settings:
    """Settings from the environment and `env_file` (default: ./.env, if it exists)."""
    path = (env_file if env_file is not None else Path.cwd() / ".env").resolve()
    source = path if path.is_file() else None
    config = Config(RepositoryEnv(str(path)) if source else RepositoryEmpty())

    def text(name: str, default: str | None = None) -> str:
        value: str = config(name) if default is None else config(name, default=default)
        return value

    def number(name: str, default: int) -> int:
        value: int = config(name, default=default, cast=int)
        return value

    def seconds(name: str, default: float) -> float:
        value: float = config(name, default=default, cast=float)
        return value

    state_dir = Path(text("CINEMA_STATE_DIR", ".cinema")).resolve()
    publisher = PostgresServer(
        name="publisher",
        host=text("POSTGRES_PUBLICIST_HOST", "127.0.0.1"),
        port=number("POSTGRES_PUBLICIST_PORT", 55432),
        database=text("POSTGRES_PUBLICIST_DB", "cinema"),
        admin_user=text("POSTGRES_PUBLICIST_USER", "cinema_admin"),
        admin_password=text("POSTGRES_PUBLICIST_PASSWORD"),
    )
    subscriber = PostgresServer(
        name="subscriber",
        host=text("POSTGRES_SUBSCRIPTION_HOST", "127.0.0.1"),
        port=number("POSTGRES_SUBSCRIPTION_PORT", 55433),
        database=text("POSTGRES_SUBSCRIPTION_DB", "cinema"),
        admin_user=text("POSTGRES_SUBSCRIPTION_USER", "cinema_admin"),
        admin_password=text("POSTGRES_SUBSCRIPTION_PASSWORD"),
    )
    interface = text("CLICKHOUSE_INTERFACE", "chdb")
    if interface not in ("chdb", "http"):
        raise ValueError(f"CLICKHOUSE_INTERFACE must be 'chdb' or 'http', got {interface!r}")
    pull_streams = number("LOADER_PULL_STREAMS", 2)
    if pull_streams < 1:
        raise ValueError(f"LOADER_PULL_STREAMS must be at least 1, got {pull_streams}")
    log_format = text("CINEMA_LOG_FORMAT", "text")
    if log_format not in ("text", "json"):
        raise ValueError(f"CINEMA_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
    return Settings(
        env_file=source,
        state_dir=state_dir,
        publisher=publisher,
        subscriber=subscriber,
        roles=Roles(
            producer_password=text("POSTGRES_PRODUCER_PASSWORD"),
            replication_password=text("POSTGRES_REPLICATION_PASSWORD"),
            loader_password=text("POSTGRES_LOADER_PASSWORD"),
            monitor_password=text("POSTGRES_MONITOR_PASSWORD"),
        ),
        publisher_address_for_subscriber=(
            text("PUBLISHER_HOST_FOR_SUBSCRIBER", publisher.host),
            number("PUBLISHER_PORT_FOR_SUBSCRIBER", publisher.port),
        ),
        warehouse=Warehouse(
            interface=cast(WarehouseInterface, interface),
            chdb_path=Path(text("CLICKHOUSE_CHDB_PATH", str(state_dir / "warehouse"))).resolve(),
            host=text("CLICKHOUSE_HOST", "127.0.0.1"),
            port=number("CLICKHOUSE_PORT", 8123),
            admin_user=text("CLICKHOUSE_USER", "default"),
            admin_password=text("CLICKHOUSE_PASSWORD", ""),
            loader_user=text("CLICKHOUSE_LOADER_USER", "cinema_loader"),
            loader_password=text("CLICKHOUSE_LOADER_PASSWORD", ""),
            raw_database=text("CLICKHOUSE_DB", "cinema_raw"),
            subscriber_address=text("SUBSCRIBER_ADDRESS_FOR_CLICKHOUSE", f"{subscriber.host}:{subscriber.port}"),
            lock_timeout_seconds=seconds("CLICKHOUSE_CHDB_LOCK_TIMEOUT_SECONDS", 600.0),
            cluster=text("CLICKHOUSE_CLUSTER", ""),
        ),
        loader=LoaderSettings(
            batch_max_rows=number("LOADER_BATCH_MAX_ROWS", 500_000),
            batch_max_wait_seconds=seconds("LOADER_BATCH_MAX_WAIT_SECONDS", 0.0),
            poll_interval_seconds=seconds("LOADER_POLL_INTERVAL_SECONDS", 0.05),
            metrics_host=text("LOADER_METRICS_HOST", "127.0.0.1"),
            metrics_port=number("LOADER_METRICS_PORT", 9464),
            runs_as_service=config("LOADER_RUNS_AS_SERVICE", default=False, cast=bool),
            pull_streams=pull_streams,
            stall_seconds=seconds("LOADER_STALL_SECONDS", 60.0),
        ),
        log_format=cast(LogFormat, log_format),
        metabase=MetabaseSettings(
            url=text("METABASE_URL", "http://127.0.0.1:3000").rstrip("/"),
            admin_email=text("METABASE_ADMIN_EMAIL", "admin@example.com"),
            admin_password=text("METABASE_ADMIN_PASSWORD", ""),
            clickhouse_user=text("CLICKHOUSE_METABASE_USER", "cinema_metabase"),
            clickhouse_password=text("CLICKHOUSE_METABASE_PASSWORD", ""),
        ),
        dbt=DbtSettings(
            clickhouse_user=text("CLICKHOUSE_DBT_USER", "cinema_dbt"),
            clickhouse_password=text("CLICKHOUSE_DBT_PASSWORD", ""),
        ),
        marts_refresh_seconds=_positive_seconds(config, "MARTS_REFRESH_SECONDS", MARTS_REFRESH_SECONDS_DEFAULT),
    )
