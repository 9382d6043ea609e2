"""Which failures the loader retries, how long it waits, and what it reports."""

from __future__ import annotations

import clickhouse_connect.driver.exceptions as clickhouse_errors
import psycopg2
import pytest
from click.testing import CliRunner

from cinema.cli import main
from loader import retry
from loader.raw import PullSource
from loader.retry import is_transient
from loader.service import Batch, Summary


@pytest.mark.parametrize(
    "error",
    [
        psycopg2.OperationalError("server closed the connection unexpectedly"),
        psycopg2.InterfaceError("connection already closed"),
        clickhouse_errors.OperationalError("Error HTTPConnectionPool: Connection refused"),
        clickhouse_errors.DatabaseError("Code: 614. Connection to `sub:5432` failed: Connection refused", code=614),
        clickhouse_errors.DatabaseError(
            "Code: 1001. pqxx::sql_error: FATAL: terminating connection due to administrator command", code=1001
        ),
        clickhouse_errors.DatabaseError("Code: 241. Memory limit exceeded", code=241),
    ],
)
def test_network_restarts_and_overload_are_transient(error):
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg2.OperationalError('FATAL: password authentication failed for user "cinema_loader"'),
        psycopg2.OperationalError('FATAL: database "cinema" does not exist'),
        clickhouse_errors.DatabaseError(
            'Code: 614. failed: FATAL: password authentication failed for user "cinema_loader"', code=614
        ),
        clickhouse_errors.DatabaseError("Code: 62. Syntax error", code=62),
        clickhouse_errors.DatabaseError("Code: 497. cinema_loader: Not enough privileges", code=497),
        clickhouse_errors.DatabaseError("Code: 1001. pqxx::sql_error: division by zero", code=1001),
        ValueError("a bug"),
    ],
)
def test_bad_credentials_bad_sql_and_bugs_are_fatal(error):
    assert not is_transient(error)


def test_the_loader_backs_off_from_half_a_second_to_thirty_for_five_minutes_of_failures():
    clock = [1000.0]
    backoff = retry.backoff(clock=lambda: clock[0])
    delays = []
    for _ in range(9):
        delay = backoff.next_delay()
        assert delay is not None
        delays.append(delay)
        clock[0] += delay
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    clock[0] += retry.RETRY_BUDGET_SECONDS
    assert backoff.next_delay() is None
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_the_summary_adds_batches_and_says_what_landed():
    summary = Summary()
    summary.add(Batch(10, 20, {"users": 2, "movies": 0, "viewing_events": 1000}, {"viewing_events": 1}, 0.5))
    summary.add(Batch(20, 30, {"users": 0, "movies": 0, "viewing_events": 1000}, {}, 0.5))
    summary.watermark = 30
    summary.seconds = 1.5
    assert summary.total_rows == 2002
    assert summary.describe() == (
        "loaded 2002 rows (users 2, movies 0, viewing_events 2000) in 2 batch(es), 1.5s (2,002 rows/s while "
        "loading); 1 quarantined; watermark 30"
    )


def test_the_subscriber_password_never_reaches_a_log():
    source = PullSource("sub:5432", "cinema", "cinema_loader", "s3cr'et")
    assert "s3cr\\'et" in source.table_function("viewing_events")
    assert source.scrub("postgresql('sub:5432', 'cinema', 'users', 'cinema_loader', 's3cr'et')") == (
        "postgresql('sub:5432', 'cinema', 'users', 'cinema_loader', '***')"
    )


def test_load_without_a_mode_is_a_usage_error():
    result = CliRunner().invoke(main, ["load"])
    assert result.exit_code == 2
    assert "choose one of --follow, --until-caught-up, --check-health or --resync" in result.output
