"""The loader on real PostgreSQL and chdb: exactly once through out-of-order commits,
streamed transactions, kill -9, subscriber restarts, SIGTERM and rows ClickHouse cannot hold.

Every test loads into its own chdb directory from the shared subscriber, so each one
starts from an empty warehouse and ends comparing the whole id set with the publisher's.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest

from cinema import db, sandbox
from cinema import stack as embedded
from cinema.names import QUARANTINE_TABLE
from cinema.replication import wait_for_subscriber
from cinema.settings import Settings
from cinema.warehouse import warehouse_client
from loader import raw, service, source
from loader.metrics import Metrics
from loader.schema import RAW_TABLES, VIEWING_EVENTS, ensure_raw_schema
from tests.integration.conftest import CINEMA, RunningStack

pytestmark = pytest.mark.integration

# Reference rows of this module's own, far from the producer's ids.
OWN_USER = 990_001
OWN_MOVIE = 990_001


# --- helpers -----------------------------------------------------------------------


def own_warehouse(stack: RunningStack, tmp_path: Path, **loader_settings: str) -> RunningStack:
    """The shared servers, a fresh chdb directory, and a free metrics port."""
    own = stack.with_warehouse(tmp_path / "warehouse")
    overrides = {"LOADER_METRICS_PORT": str(sandbox.free_port()), **loader_settings}
    loader = replace(
        own.settings.loader,
        metrics_port=int(overrides["LOADER_METRICS_PORT"]),
        batch_max_rows=int(overrides.get("LOADER_BATCH_MAX_ROWS", own.settings.loader.batch_max_rows)),
        batch_max_wait_seconds=float(
            overrides.get("LOADER_BATCH_MAX_WAIT_SECONDS", own.settings.loader.batch_max_wait_seconds)
        ),
    )
    return replace(own, settings=replace(own.settings, loader=loader), env={**own.env, **overrides})


def ensure_own_reference_rows(settings: Settings) -> None:
    db.run_as_admin(
        settings,
        "publisher",
        f"INSERT INTO users VALUES ({OWN_USER}, 'Loader Test', 'FR', 60, 'basic', '2026-01-01') ON CONFLICT DO NOTHING",
        f"INSERT INTO movies VALUES ({OWN_MOVIE}, 'Loader Test', 2001, 'Drama', 5400) ON CONFLICT DO NOTHING",
    )


def insert_events(
    cursor: psycopg2.extensions.cursor, count: int, event_time: str = "2026-11-20 20:00:00+00"
) -> list[int]:
    cursor.execute(
        "INSERT INTO viewing_events (event_id, session_id, user_id, movie_id, device_type, event_type, "
        "position_ms, event_time) SELECT gen_random_uuid(), gen_random_uuid(), %s, %s, 'phone', 'heartbeat', "
        "g * 1000, %s::timestamptz FROM generate_series(1, %s) AS g RETURNING id",
        (OWN_USER, OWN_MOVIE, event_time, count),
    )
    return [row[0] for row in cursor.fetchall()]


@contextmanager
def publisher_transaction(settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    """An open transaction on the publisher, committed only when the test says so."""
    connection = db.admin(settings, "publisher")
    connection.autocommit = False
    try:
        yield connection
    finally:
        connection.close()


def publisher_ids(settings: Settings) -> set[int]:
    with db.closing(db.monitor(settings, "publisher")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM viewing_events")
        return {row[0] for row in cursor}


def warehouse_query(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    with warehouse_client(settings) as client:
        return [tuple(row) for row in client.query(sql).result_rows]


def loaded_event_ids(settings: Settings) -> list[int]:
    return [int(row[0]) for row in warehouse_query(settings, "SELECT id FROM cinema_raw.viewing_events")]


def quarantined_event_ids(settings: Settings) -> set[int]:
    rows = warehouse_query(
        settings, f"SELECT row_key FROM cinema_raw.{QUARANTINE_TABLE} WHERE table_name = 'viewing_events'"
    )
    return {int(str(row[0])) for row in rows}


def quarantined_twice(settings: Settings) -> int:
    """Rows of `_quarantine` beyond one per (table, key): what a set of keys cannot show."""
    ((rows, keys),) = warehouse_query(
        settings, f"SELECT count(), uniqExact(table_name, row_key) FROM cinema_raw.{QUARANTINE_TABLE}"
    )
    return int(rows) - int(keys)


def assert_exactly_once(settings: Settings) -> int:
    """Every publisher event is in ClickHouse once, or quarantined once; nothing else is there."""
    loaded = loaded_event_ids(settings)
    assert len(loaded) == len(set(loaded)), f"{len(loaded) - len(set(loaded))} duplicated event ids"
    assert quarantined_twice(settings) == 0, f"{quarantined_twice(settings)} rows quarantined more than once"
    quarantined = quarantined_event_ids(settings)
    assert not quarantined & set(loaded)
    expected = publisher_ids(settings)
    missing = expected - set(loaded) - quarantined
    unexpected = set(loaded) - expected
    assert not missing, f"{len(missing)} publisher events never landed, e.g. {sorted(missing)[:5]}"
    assert not unexpected, f"{len(unexpected)} events in ClickHouse the publisher does not have"
    return len(loaded)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def scrape(settings: Settings) -> dict[str, float]:
    """The running loader's unlabelled metrics, or {} while it does not answer."""
    url = f"http://127.0.0.1:{settings.loader.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = (line.split() for line in text.splitlines() if line and not line.startswith("#") and "{" not in line)
    return {name: float(value) for name, value in samples}


def start_follow(own: RunningStack, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as output:
        return subprocess.Popen(
            [CINEMA, "load", "--follow"], env=own.env, cwd=own.workdir, stdout=output, stderr=output
        )


def start_generate(own: RunningStack, events: int, seed: int, log_file: Path, *options: str) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as output:
        return subprocess.Popen(
            [CINEMA, "generate", "--events", str(events), "--seed", str(seed), "--writers", "8", *options],
            env=own.env,
            cwd=own.workdir,
            stdout=output,
            stderr=output,
        )


def subscriber_xmax(settings: Settings) -> int:
    with db.closing(db.loader(settings)) as connection:
        return source.snapshot(connection).xmax


# --- schema ------------------------------------------------------------------------

CONTRACT = {
    "viewing_events": {
        "id": "Int64",
        "event_id": "UUID",
        "session_id": "UUID",
        "user_id": "Int32",
        "movie_id": "Int32",
        "device_type": "LowCardinality(String)",
        "event_type": "LowCardinality(String)",
        "position_ms": "Int64",
        "event_time": "DateTime64(3, 'UTC')",
        "received_at": "DateTime64(6, 'UTC')",
        "_xid": "UInt64",
        "_loaded_at": "DateTime64(6, 'UTC')",
    },
    "users": {
        "user_id": "Int32",
        "display_name": "String",
        "country_code": "LowCardinality(String)",
        "utc_offset_minutes": "Int16",
        "plan": "LowCardinality(String)",
        "signed_up_at": "DateTime64(6, 'UTC')",
        "_xid": "UInt64",
        "_loaded_at": "DateTime64(6, 'UTC')",
    },
    "movies": {
        "movie_id": "Int32",
        "title": "String",
        "release_year": "Int16",
        "genre": "LowCardinality(String)",
        "runtime_seconds": "Int32",
        "_xid": "UInt64",
        "_loaded_at": "DateTime64(6, 'UTC')",
    },
}


def test_raw_schema_is_the_contract_and_creating_it_twice_changes_nothing(stack, tmp_path):
    own = own_warehouse(stack, tmp_path)
    with warehouse_client(own.settings) as client:
        ensure_raw_schema(client, "cinema_raw")
        ensure_raw_schema(client, "cinema_raw")
        for table, columns in CONTRACT.items():
            described = {row[0]: row[1] for row in client.query(f"DESCRIBE TABLE cinema_raw.{table}").result_rows}
            assert described == columns, table
        engines = {
            row[0]: row[1:]
            for row in client.query(
                "SELECT name, engine_full LIKE 'ReplacingMergeTree(_xid)%', sorting_key, partition_key "
                "FROM system.tables WHERE database = 'cinema_raw'"
            ).result_rows
        }
    assert engines["viewing_events"] == (False, "session_id, event_time, id", "toYYYYMM(event_time)")
    assert engines["users"] == (True, "user_id", "")
    assert engines["movies"] == (True, "movie_id", "")
    assert {"_loader_batches", QUARANTINE_TABLE} <= set(engines)


# --- correctness -------------------------------------------------------------------


def test_a_transaction_committed_after_a_later_one_still_lands_exactly_once(stack, tmp_path):
    own = own_warehouse(stack, tmp_path)
    ensure_own_reference_rows(stack.settings)
    with publisher_transaction(stack.settings) as first, publisher_transaction(stack.settings) as second:
        with first.cursor() as cursor:
            first_ids = insert_events(cursor, 50)
        with second.cursor() as cursor:
            second_ids = insert_events(cursor, 50)
        second.commit()
        assert min(second_ids) > max(first_ids), "the held transaction took its ids first"

        summary = service.drain(own.settings)
        assert summary.caught_up
        loaded = set(loaded_event_ids(own.settings))
        assert set(second_ids) <= loaded
        assert not set(first_ids) & loaded

        first.commit()
    summary = service.drain(own.settings)
    assert summary.caught_up
    assert summary.rows["viewing_events"] == 50
    assert set(first_ids) <= set(loaded_event_ids(own.settings))
    assert_exactly_once(own.settings)


def test_nothing_past_an_open_streamed_transaction_is_loaded_until_it_commits(stack, tmp_path):
    """The publisher streams the open transaction (debug_logical_replication_streaming =
    immediate), the subscriber applies it in a parallel worker, whose open xid holds the
    watermark back: a later commit must wait for it."""
    own = own_warehouse(stack, tmp_path)
    ensure_own_reference_rows(stack.settings)
    db.run_as_admin(
        stack.settings,
        "publisher",
        "ALTER SYSTEM SET debug_logical_replication_streaming = immediate",
        "SELECT pg_reload_conf()",
    )
    try:
        with publisher_transaction(stack.settings) as large, publisher_transaction(stack.settings) as later:
            with large.cursor() as cursor:
                large_ids = insert_events(cursor, 5000)
            with db.closing(db.admin(stack.settings, "subscriber")) as subscriber:
                open_xid: list[int] = []

                def streamed() -> bool:
                    xid = db.scalar(
                        subscriber,
                        "SELECT min(backend_xid::text::bigint) FROM pg_stat_activity "
                        "WHERE backend_type = 'logical replication parallel worker'",
                    )
                    open_xid[:] = [] if xid is None else [int(xid)]
                    return bool(open_xid)

                wait_until(streamed, 30, "the subscriber to apply the open transaction in a parallel worker")
                with later.cursor() as cursor:
                    later_ids = insert_events(cursor, 100)
                later.commit()
                arrived = "SELECT count(*) FROM viewing_events WHERE id = ANY(%s)"
                wait_until(
                    lambda: db.scalar(subscriber, arrived, (later_ids,)) == len(later_ids),
                    30,
                    "the later transaction on the subscriber",
                )

            stop = threading.Event()
            metrics = Metrics()
            loading = threading.Thread(
                target=service.run, args=(own.settings, stop), kwargs={"target": None, "metrics": metrics}
            )
            loading.start()
            try:
                wait_until(lambda: metrics.watermark >= open_xid[0], 60, "the loader to reach the open transaction")
                time.sleep(1.0)  # several more polls, each of which could wrongly go further
                assert metrics.watermark == open_xid[0]
            finally:
                stop.set()
                loading.join(60)
            loaded = set(loaded_event_ids(own.settings))
            assert not set(later_ids) & loaded
            assert not set(large_ids) & loaded
            assert (
                warehouse_query(own.settings, "SELECT max(watermark) FROM cinema_raw._loader_batches")[0][0]
                <= (open_xid[0])
            )
            large.commit()
    finally:
        db.run_as_admin(
            stack.settings,
            "publisher",
            "ALTER SYSTEM RESET debug_logical_replication_streaming",
            "SELECT pg_reload_conf()",
        )
    summary = service.drain(own.settings)
    assert summary.caught_up
    loaded = set(loaded_event_ids(own.settings))
    assert set(large_ids) | set(later_ids) <= loaded
    assert_exactly_once(own.settings)


def test_rows_of_a_batch_that_never_committed_are_replaced_not_duplicated(stack, tmp_path, caplog):
    own = own_warehouse(stack, tmp_path)
    ensure_own_reference_rows(stack.settings)
    assert service.drain(own.settings).caught_up
    with publisher_transaction(stack.settings) as connection, connection.cursor() as cursor:
        insert_events(cursor, 300)
        connection.commit()
    wait_for_subscriber(stack.settings)
    # A loader that died after pulling the window and before recording it left this behind.
    with warehouse_client(own.settings) as client:
        lo = raw.resume_point(client, "cinema_raw")
        fence = raw.Fence("cinema_raw", raw.current_epoch(client, "cinema_raw"))
        raw.pull(client, raw.pull_source(own.settings), fence, VIEWING_EVENTS, lo, subscriber_xmax(own.settings))
    caplog.set_level(logging.WARNING, logger="loader.raw")
    assert service.drain(own.settings).caught_up
    assert "removing 300 rows of an uncommitted batch from viewing_events" in caplog.text
    assert_exactly_once(own.settings)


def test_rows_clickhouse_cannot_hold_are_quarantined_with_their_key_and_the_rest_loads(stack, tmp_path):
    own = own_warehouse(stack, tmp_path)
    ensure_own_reference_rows(stack.settings)
    with publisher_transaction(stack.settings) as connection, connection.cursor() as cursor:
        good = insert_events(cursor, 3)
        infinite = insert_events(cursor, 1, "infinity")
        far_future = insert_events(cursor, 1, "3000-01-01 00:00:00+00")
        cursor.execute("INSERT INTO users VALUES (990002, 'Never Signed Up', 'DE', 60, 'basic', 'infinity')")
        connection.commit()

    summary = service.drain(own.settings)

    assert summary.caught_up
    assert summary.quarantined == 3
    quarantined = {
        (row[0], row[1]): (row[2], json.loads(str(row[3])))
        for row in warehouse_query(
            own.settings, f"SELECT table_name, row_key, reason, row_json FROM cinema_raw.{QUARANTINE_TABLE}"
        )
    }
    assert set(quarantined) == {
        ("viewing_events", str(infinite[0])),
        ("viewing_events", str(far_future[0])),
        ("users", "990002"),
    }
    reason, row = quarantined[("viewing_events", str(infinite[0]))]
    assert reason.startswith("event_time infinity is outside")
    assert row["id"] == infinite[0]
    assert row["event_time"] == "infinity"
    assert set(good) <= set(loaded_event_ids(own.settings))
    assert warehouse_query(own.settings, "SELECT count() FROM cinema_raw.users WHERE user_id = 990002") == [(0,)]
    assert_exactly_once(own.settings)


def test_a_second_loader_is_refused_and_a_drain_waits_for_the_first(stack, tmp_path):
    own = own_warehouse(stack, tmp_path)
    with warehouse_client(own.settings) as client:
        ensure_raw_schema(client, "cinema_raw")
        identity = f"cinema-loader/{raw.database_uuid(client, 'cinema_raw')}"
    with db.closing(db.loader(own.settings)) as first_loader:
        assert source.try_lock(first_loader, identity)
        with pytest.raises(service.AnotherLoaderRunning, match="another loader is running on the raw database"):
            service.run(own.settings, threading.Event(), target=None, metrics=Metrics())

        outcome: list[service.Summary] = []
        draining = threading.Thread(target=lambda: outcome.append(service.drain(own.settings)))
        draining.start()
        time.sleep(2.0)
        assert draining.is_alive(), "the drain should wait while another loader holds the lock"
    draining.join(120)
    assert outcome
    assert outcome[0].caught_up
    assert_exactly_once(own.settings)


# --- the service under failures ------------------------------------------------------


def test_kill_9_at_random_points_while_events_load_loses_and_duplicates_nothing(stack, tmp_path):
    # Small batches and a backlog, so that each restarted loader is killed in the middle of
    # loading (pulling, checking, recording or recovering), while eight writers still commit.
    # A batch never splits a transaction, and the loader takes a million rows a second in
    # big ones: small transactions make the backlog outlast six restarts.
    own = own_warehouse(stack, tmp_path, LOADER_BATCH_MAX_ROWS="1000", LOADER_BATCH_MAX_WAIT_SECONDS="0")
    own.cinema("generate", "--events", "150000", "--seed", "7101", "--writers", "8", "--chunk-size", "500")
    generator = start_generate(own, 80_000, 7102, tmp_path / "generate.log", "--chunk-size", "500")
    chance = random.Random(7103)
    kills = 0

    def first_batch_or_nothing_left() -> bool:
        metrics = scrape(own.settings)
        if metrics.get("cinema_loader_batches_total", 0) >= 1:
            return True
        # Caught up before a batch was due: it has measured (a watermark), nothing is pending,
        # nothing more is written. A loader still starting reports a lag of 0 too.
        return (
            generator.poll() is not None
            and metrics.get("cinema_loader_watermark", 0) > 0
            and metrics.get("cinema_loader_lag_rows") == 0
        )

    def recoveries(*more_output: str) -> int:
        text = "".join(((tmp_path / "loader.log").read_text(), *more_output))
        return text.count("of an uncommitted batch")

    try:
        # Six kills, and more (up to twelve) until one has hit a batch in flight, whose
        # leftover rows the next start removes: the recovery path must have run.
        while kills < 6 or (not recoveries() and kills < 12):
            loader = start_follow(own, tmp_path / "loader.log")
            try:
                wait_until(first_batch_or_nothing_left, 60, "the restarted loader's first batch")
                time.sleep(chance.uniform(0.0, 0.3))
            finally:
                loader.send_signal(signal.SIGKILL)
                loader.wait(30)
            kills += 1
    finally:
        assert generator.wait(300) == 0, (tmp_path / "generate.log").read_text()
    wait_for_subscriber(stack.settings, timeout_seconds=300)
    drained = own.cinema("load", "--until-caught-up")

    recovered = recoveries(drained.stderr)
    print(f"{kills} kills, {recovered} recoveries removed rows of an uncommitted batch")
    assert recovered >= 1, f"none of {kills} kills hit a batch in flight: the recovery path never ran"
    assert assert_exactly_once(own.settings) >= 230_000


def restart_subscriber(settings: Settings) -> None:
    embedded.restart(settings, settings.subscriber)


def test_a_subscriber_restart_mid_load_is_retried_and_loses_nothing(stack, tmp_path):
    own = own_warehouse(stack, tmp_path, LOADER_BATCH_MAX_ROWS="20000")
    log_file = tmp_path / "loader.log"
    loader = start_follow(own, log_file)
    try:
        generator = start_generate(own, 60_000, 7201, tmp_path / "generate.log")
        wait_until(lambda: scrape(own.settings).get("cinema_loader_batches_total", 0) >= 2, 120, "two batches")
        restart_subscriber(stack.settings)
        assert generator.wait(300) == 0, (tmp_path / "generate.log").read_text()
        # Where the loader runs as a service, --until-caught-up waits for it instead of
        # loading (a zero lock timeout: it must not even try to open the warehouse).
        waiting = replace(
            own.settings,
            loader=replace(own.settings.loader, runs_as_service=True),
            warehouse=replace(own.settings.warehouse, lock_timeout_seconds=0),
        )
        summary = service.drain(waiting)
        assert summary.caught_up
        assert summary.watermark > 0
    finally:
        loader.send_signal(signal.SIGTERM)
        assert loader.wait(60) == 0, log_file.read_text()
    assert "transient error, retrying" in log_file.read_text()
    assert_exactly_once(own.settings)


def test_sigterm_finishes_the_batch_in_flight_and_exits_0(stack, tmp_path):
    own = own_warehouse(stack, tmp_path, LOADER_BATCH_MAX_ROWS="5000")
    stack.cinema("generate", "--events", "30000", "--seed", "7301", "--writers", "4")
    wait_for_subscriber(stack.settings)
    log_file = tmp_path / "loader.log"
    loader = start_follow(own, log_file)
    try:
        wait_until(lambda: scrape(own.settings).get("cinema_loader_batches_total", 0) >= 1, 60, "a first batch")
        health = own.cinema("load", "--check-health")
        assert json.loads(health.stdout)["status"] == "ok"
    finally:
        loader.send_signal(signal.SIGTERM)
        exit_code = loader.wait(60)
    assert exit_code == 0, log_file.read_text()
    assert "SIGTERM: finishing the current batch" in log_file.read_text()
    assert own.cinema("load", "--check-health", check=False).returncode == 1
    committed, batches = warehouse_query(
        own.settings, "SELECT max(watermark), count() FROM cinema_raw._loader_batches"
    )[0]
    assert batches >= 1
    for table in RAW_TABLES:
        uncommitted = warehouse_query(
            own.settings, f"SELECT count() FROM cinema_raw.{table.name} WHERE _xid >= {committed}"
        )
        assert uncommitted == [(0,)], f"{table.name} holds rows of a batch SIGTERM abandoned"


def test_stack_status_shows_the_warehouse_or_who_holds_it(stack, tmp_path):
    own = own_warehouse(stack, tmp_path)
    summary = service.drain(own.settings)
    report = json.loads(own.cinema("stack", "status", "--json").stdout)["warehouse"]
    assert report["state"] == "open"
    assert report["watermark"] >= 1
    assert report["rows"]["viewing_events"] == len(loaded_event_ids(own.settings)) == summary.rows["viewing_events"]
    with warehouse_client(own.settings):
        busy = json.loads(own.cinema("stack", "status", "--json").stdout)["warehouse"]
    assert busy["state"].startswith(f"busy: pid {os.getpid()}")


# --- the fence and the cases the loader cannot decide ----------------------------------


def test_connections_keep_alive_the_wal_writer_is_quick_and_a_stopped_wait_returns_at_once(stack):
    with db.closing(db.loader(stack.settings)) as connection:
        parameters = connection.get_dsn_parameters()
        # postgres_init/subscriber/05_settings.sql: the flush gate's WAL writer.
        assert db.scalar(connection, "SHOW wal_writer_delay") == "20ms"
    assert (parameters["keepalives_idle"], parameters["keepalives_interval"], parameters["keepalives_count"]) == (
        "30",
        "10",
        "3",
    )
    stop = threading.Event()
    stop.set()
    began = time.monotonic()
    # A position the subscriber will not reach for a long while: only the stop ends the wait.
    wait_for_subscriber(stack.settings, timeout_seconds=600, target_lsn="FFFF/0", stop=stop)
    assert time.monotonic() - began < 5


def test_a_loader_whose_epoch_was_superseded_writes_nothing(stack, tmp_path, monkeypatch):
    own = own_warehouse(stack, tmp_path)
    ensure_own_reference_rows(stack.settings)
    assert service.drain(own.settings).caught_up
    with publisher_transaction(stack.settings) as connection, connection.cursor() as cursor:
        new_ids = insert_events(cursor, 100)
        connection.commit()
    wait_for_subscriber(stack.settings)
    monkeypatch.setenv("PGTZ", "UTC")  # what service.run sets for chdb's pulls
    loader = service.Loader(own.settings, Metrics())
    try:
        assert loader.attach()
        before = raw.position(loader.client, "cinema_raw")
        # The next loader attached (this one lost its lock without noticing yet).
        raw.new_epoch(loader.client, "cinema_raw", "the next loader")
        with pytest.raises(service.Fenced, match="fenced this one off; nothing more was written"):
            loader.step(batching=False)
        assert raw.position(loader.client, "cinema_raw") == before
        landed = loader.client.query(f"SELECT count() FROM cinema_raw.viewing_events WHERE id IN {tuple(new_ids)}")
        assert landed.result_rows == [(0,)]
    finally:
        loader.close()
    assert service.drain(own.settings).caught_up
    assert set(new_ids) <= set(loaded_event_ids(own.settings))
    assert_exactly_once(own.settings)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("watermark beyond the horizon", "is below the loader's watermark"),
        ("records of an older loader", "loaded by an older loader that did not record which subscriber"),
    ],
)
def test_what_the_loader_cannot_decide_stops_it_until_cinema_load_resync(stack, tmp_path, case, message):
    own = own_warehouse(stack, tmp_path)
    ensure_own_reference_rows(stack.settings)
    with publisher_transaction(stack.settings) as connection, connection.cursor() as cursor:
        insert_events(cursor, 10)
        connection.commit()
    own.cinema("load", "--until-caught-up")
    with warehouse_client(own.settings) as client:
        last = raw.position(client, "cinema_raw")
        assert last is not None
        fence = raw.Fence("cinema_raw", raw.current_epoch(client, "cinema_raw"))
        if case == "watermark beyond the horizon":
            position = replace(last, watermark=last.watermark + 10**9, sequence=last.sequence + 1)
        else:
            position = replace(last, sequence=last.sequence + 1, subscriber=source.Identity(0, 0, 0))
        raw.record_batch(client, fence, raw.BatchRecord(from_xid=last.watermark, position=position))

    stopped = own.cinema("load", "--until-caught-up", check=False)

    assert stopped.returncode == 1
    assert "Traceback" not in stopped.stderr
    (line,) = [line for line in stopped.stderr.splitlines() if line.startswith("Error: ")]
    assert message in line
    assert "un `cinema load --resync`" in line
    resynced = own.cinema("load", "--resync")
    assert "re-baselined cinema_raw on the subscriber as it is now" in resynced.stdout
    own.cinema("load", "--until-caught-up")
    assert_exactly_once(own.settings)
