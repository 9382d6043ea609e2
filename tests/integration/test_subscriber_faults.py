"""Exactly once when the subscriber itself fails: crashes under live load, a recreated
subscription, a rebuilt subscriber, a transaction held open, ids near 2^63.

These tests crash, rebuild and re-subscribe the subscriber, so they run on a stack of
their own (the shared one stays untouched for the other modules). Each loads into its
own chdb directory and ends comparing the exact id set with the publisher's; each
prints its tally (published, loaded, lost, duplicated) for the record.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cinema import db
from cinema import stack as embedded
from cinema.names import QUARANTINE_TABLE, SUBSCRIPTION
from cinema.replication import wait_for_subscriber
from cinema.settings import Settings
from tests.integration.conftest import CINEMA, RunningStack, running_stack
from tests.integration.test_loader import (
    OWN_MOVIE,
    OWN_USER,
    ensure_own_reference_rows,
    insert_events,
    loaded_event_ids,
    own_warehouse,
    publisher_ids,
    publisher_transaction,
    quarantined_event_ids,
    quarantined_twice,
    scrape,
    start_follow,
    wait_until,
    warehouse_query,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STALL_SECONDS = "2"


@pytest.fixture(scope="module")
def faults() -> Iterator[RunningStack]:
    with running_stack("cinema-faults-", LOADER_STALL_SECONDS=STALL_SECONDS) as running:
        yield running


def tally(settings: Settings) -> dict[str, int]:
    """Published, loaded (distinct), lost and duplicated events, quarantined ones counting as loaded
    (and quarantine rows beyond one per key)."""
    loaded = Counter(loaded_event_ids(settings))
    landed = set(loaded) | quarantined_event_ids(settings)
    published = publisher_ids(settings)
    return {
        "published": len(published),
        "loaded": len(landed & published),
        "lost": len(published - landed),
        "duplicated": sum(count - 1 for count in loaded.values()),
        "unexpected": len(landed - published),
        "quarantined_twice": quarantined_twice(settings),
    }


def assert_exactly_once(settings: Settings, what: str) -> dict[str, int]:
    counts = tally(settings)
    print(f"{what}: {counts}")
    assert counts["lost"] == counts["duplicated"] == counts["unexpected"] == counts["quarantined_twice"] == 0, counts
    return counts


def subscriber_files(settings: Settings) -> embedded.ServerFiles:
    return embedded.ServerFiles.of(settings, settings.subscriber)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def backend_pids(settings: Settings) -> list[int]:
    with db.closing(db.admin(settings, "subscriber")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        return [row[0] for row in cursor]


def rolled_back_transactions(settings: Settings, count: int) -> None:
    """Transactions on the subscriber that take xids and roll back: some write nothing
    (no WAL at all, so recovery can hand their xids out again), some write and abort."""
    with db.closing(db.admin(settings, "subscriber")) as connection:
        connection.autocommit = False
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS fault_scratch (n integer)")
            connection.commit()
            for index in range(count):
                if index % 2:
                    cursor.execute("INSERT INTO fault_scratch SELECT generate_series(1, 10)")
                else:
                    cursor.execute("SELECT pg_current_xact_id()")
                connection.rollback()


def pause_idle_walwriter(settings: Settings, walwriter: int) -> None:
    """SIGSTOP the walwriter between two rounds. Stopped inside a write or an fsync it would
    hold WALWriteLock, and every commit that needs WAL space, this test's own included,
    would wait for it forever (seen here on a loaded machine)."""
    with db.closing(db.admin(settings, "subscriber")) as connection:
        connection.autocommit = True  # each read sees the activity afresh
        for _ in range(200):
            os.kill(walwriter, signal.SIGSTOP)
            wait_until(
                lambda: Path(f"/proc/{walwriter}/stat").read_text().split()[2] == "T", 5, "the walwriter to stop"
            )
            waiting_for = db.scalar(connection, "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (walwriter,))
            if waiting_for == "WalWriterMain":
                return
            os.kill(walwriter, signal.SIGCONT)
            time.sleep(0.01)
    raise AssertionError("the walwriter was never idle when paused")


def crash_subscriber(settings: Settings, how: str, pause_seconds: float) -> None:
    """Pause the walwriter (commits stay visible but unflushed), roll some transactions
    back in the window, then crash the subscriber: `pg_ctl stop -m immediate` or kill -9
    of its postmaster. The paused walwriter is killed too, so it never flushes."""
    files = subscriber_files(settings)
    postmaster = int((files.data_dir / "postmaster.pid").read_text().split()[0])
    with db.closing(db.admin(settings, "subscriber")) as connection:
        walwriter = int(db.scalar(connection, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'"))
    children = backend_pids(settings)
    pause_idle_walwriter(settings, walwriter)
    try:
        rolled_back_transactions(settings, 6)
        time.sleep(pause_seconds)
        if how == "immediate":
            embedded.server_tool("pg_ctl", "stop", "-D", str(files.data_dir), "-m", "immediate", "-W")
        else:
            os.kill(postmaster, signal.SIGKILL)
    finally:
        os.kill(walwriter, signal.SIGKILL)
    # A new postmaster refuses to start while any old child still holds shared memory.
    wait_until(
        lambda: not any(process_alive(pid) for pid in (postmaster, walwriter, *children)),
        60,
        "the crashed subscriber's processes to exit",
    )
    # The dead postmaster's lock files stay: `cinema stack up` must see through them.


def start_live_generate(
    own: RunningStack, rate: int, seconds: float, seed: int, log_file: Path
) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as output:
        return subprocess.Popen(
            [
                CINEMA,
                "generate",
                "--rate",
                str(rate),
                "--duration",
                str(seconds),
                "--seed",
                str(seed),
                "--writers",
                "4",
            ],
            env=own.env,
            cwd=own.workdir,
            stdout=output,
            stderr=output,
        )


def stop_follow(loader: subprocess.Popen[bytes], log_file: Path) -> None:
    loader.send_signal(signal.SIGTERM)
    assert loader.wait(120) == 0, log_file.read_text()[-4000:]


# --- crashes ---------------------------------------------------------------------------


def test_subscriber_crashes_under_live_load_lose_and_duplicate_nothing(faults, tmp_path):
    own = own_warehouse(faults, tmp_path, LOADER_BATCH_MAX_ROWS="3000", LOADER_BATCH_MAX_WAIT_SECONDS="0")
    schedule = random.Random(10_501)
    log_file = tmp_path / "loader.log"
    loader = start_follow(own, log_file)
    generator = start_live_generate(own, 3000, 45, 10_502, tmp_path / "generate.log")
    crashes = []
    try:
        wait_until(lambda: scrape(own.settings).get("cinema_loader_batches_total", 0) >= 2, 60, "two batches")
        for number in range(6):
            how = "immediate" if number % 2 == 0 else "kill -9"
            time.sleep(schedule.uniform(0.5, 3.5))
            crash_subscriber(faults.settings, how, pause_seconds=schedule.uniform(0.5, 2.5))
            crashes.append(how)
            embedded.up(faults.settings)
        assert generator.wait(300) == 0, (tmp_path / "generate.log").read_text()
        wait_for_subscriber(faults.settings, timeout_seconds=300)
        wait_until(lambda: scrape(own.settings).get("cinema_loader_lag_rows", 1) == 0, 120, "the loader to catch up")
    finally:
        if generator.poll() is None:
            generator.kill()
        stop_follow(loader, log_file)
    drained = own.cinema("load", "--until-caught-up")
    assert "loaded" in drained.stdout
    rewinds = log_file.read_text().count("the subscriber restarted since the last batch")
    print(f"{len(crashes)} crashes ({', '.join(crashes)}), {rewinds} rewinds")
    counts = assert_exactly_once(own.settings, "subscriber crashes under live load")
    assert counts["published"] >= 60_000
    assert rewinds >= 1


# --- a recreated subscription and a rebuilt subscriber ------------------------------------


def test_a_recreated_subscription_is_reloaded_without_a_duplicate(faults, tmp_path):
    own = own_warehouse(faults, tmp_path)
    faults.cinema("generate", "--events", "20000", "--seed", "10601")
    ensure_own_reference_rows(faults.settings)
    # Quarantined by the first load; the re-load meets it again and must not quarantine it twice.
    with publisher_transaction(faults.settings) as connection, connection.cursor() as cursor:
        (unloadable,) = insert_events(cursor, 1, "infinity")
        connection.commit()
    own.cinema("load", "--until-caught-up")
    db.run_as_admin(faults.settings, "subscriber", f"DROP SUBSCRIPTION {SUBSCRIPTION}")
    db.run_as_admin(faults.settings, "subscriber", "TRUNCATE viewing_events, users, movies")
    faults.cinema("stack", "up")
    faults.cinema("generate", "--events", "3000", "--seed", "10602")

    drained = own.cinema("load", "--until-caught-up")

    assert_exactly_once(own.settings, "recreated subscription")
    assert "the subscription was recreated" in drained.stderr
    assert warehouse_query(
        own.settings, f"SELECT count() FROM cinema_raw.{QUARANTINE_TABLE} WHERE row_key = '{unloadable}'"
    ) == [(1,)]


def test_a_rebuilt_subscriber_gets_its_slot_back_and_loses_nothing(faults, tmp_path):
    own = own_warehouse(faults, tmp_path)
    ensure_own_reference_rows(faults.settings)
    faults.cinema("generate", "--events", "10000", "--seed", "10701")
    own.cinema("load", "--until-caught-up")
    files = subscriber_files(faults.settings)
    embedded.server_tool("pg_ctl", "stop", "-D", str(files.data_dir), "-m", "fast", "-w")
    shutil.rmtree(files.data_dir)
    # Changed while the subscriber is gone: the rebuilt one copies it with a low xid.
    db.run_as_admin(
        faults.settings, "publisher", f"UPDATE users SET display_name = 'Rebuilt' WHERE user_id = {OWN_USER}"
    )

    faults.cinema("stack", "up")
    faults.cinema("generate", "--events", "10000", "--seed", "10702")
    drained = own.cinema("load", "--until-caught-up")

    assert_exactly_once(own.settings, "rebuilt subscriber")
    assert "the subscriber is another cluster" in drained.stderr
    assert warehouse_query(
        own.settings, f"SELECT display_name FROM cinema_raw.users FINAL WHERE user_id = {OWN_USER}"
    ) == [("Rebuilt",)]
    assert warehouse_query(
        own.settings, f"SELECT count() FROM cinema_raw.movies FINAL WHERE movie_id = {OWN_MOVIE}"
    ) == [(1,)]


# --- a transaction held open on the subscriber ------------------------------------------


def healthz(settings: Settings) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{settings.loader.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_transaction_held_open_on_the_subscriber_is_a_visible_stall(faults, tmp_path):
    own = own_warehouse(faults, tmp_path)
    ensure_own_reference_rows(faults.settings)
    log_file = tmp_path / "loader.log"
    loader = start_follow(own, log_file)
    held = db.admin(faults.settings, "subscriber")
    try:
        wait_until(lambda: scrape(own.settings).get("cinema_loader_up") == 1, 60, "a healthy loader")
        held.autocommit = False
        with held.cursor() as cursor:
            cursor.execute("SET application_name = 'held-by-test'")
            cursor.execute("SELECT pg_current_xact_id(), pg_backend_pid()")
            _, blocker = cursor.fetchone()
        faults.cinema("generate", "--events", "2000", "--seed", "10801")
        wait_for_subscriber(faults.settings)

        wait_until(lambda: scrape(own.settings).get("cinema_loader_stall_seconds", 0) > 0, 60, "the stall")
        metrics = scrape(own.settings)
        assert metrics["cinema_loader_stall_blocking_pid"] == blocker
        assert metrics["cinema_loader_lag_rows"] >= 2000
        assert metrics["cinema_loader_up"] == 0
        status, report = healthz(own.settings)
        assert status == 503
        assert report["status"] == "stalled"
        assert report["blocking_pid"] == blocker
        assert f"subscriber backend {blocker} (held-by-test, idle in transaction" in str(report["stall"])
        assert own.cinema("load", "--check-health", check=False).returncode == 1
        assert f"subscriber backend {blocker} (held-by-test" in log_file.read_text()
        stack_status = json.loads(own.cinema("stack", "status", "--json").stdout)
        assert f"subscriber backend {blocker} (held-by-test" in stack_status["replication"]["loading_stall"]

        other = own_warehouse(faults, tmp_path / "other")
        timed_out = other.cinema("load", "--until-caught-up", "--timeout", "5", check=False)
        assert timed_out.returncode == 1
        assert "Traceback" not in timed_out.stderr
        (message,) = [line for line in timed_out.stderr.splitlines() if line.startswith("Error: ")]
        assert f"held by subscriber backend {blocker} (held-by-test, idle in transaction" in message
        assert f"pg_terminate_backend({blocker})" in message
    finally:
        held.close()
    try:
        wait_until(lambda: healthz(own.settings)[0] == 200, 60, "health back once the transaction ended")
        assert scrape(own.settings)["cinema_loader_stall_seconds"] == 0
    finally:
        stop_follow(loader, log_file)
    own.cinema("load", "--until-caught-up")
    assert_exactly_once(own.settings, "held transaction")


# --- ids near 2^63 ----------------------------------------------------------------------


def test_event_ids_near_2_to_the_63_load_exactly_once(faults, tmp_path):
    own = own_warehouse(faults, tmp_path)
    ensure_own_reference_rows(faults.settings)
    top = 2**63 - 1
    with db.closing(db.producer(faults.settings)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO viewing_events (id, event_id, session_id, user_id, movie_id, device_type, event_type, "
            "position_ms, event_time) OVERRIDING SYSTEM VALUE SELECT id, gen_random_uuid(), gen_random_uuid(), %s, %s, "
            "'phone', 'heartbeat', 0, '2026-11-20 20:00:00+00' FROM unnest(%s::bigint[]) AS id",
            (OWN_USER, OWN_MOVIE, [top, top - 1, top - 2]),
        )
        connection.commit()

    drained = own.cinema("load", "--until-caught-up")

    assert "loaded" in drained.stdout
    assert {top, top - 1, top - 2} <= set(loaded_event_ids(own.settings))
    assert_exactly_once(own.settings, "ids near 2^63")
