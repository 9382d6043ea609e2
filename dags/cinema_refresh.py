"""
### cinema_refresh: the marts kept current while events stream

Every MARTS_REFRESH_SECONDS (default 30), alongside the daily `cinema_elt`:

1. **load_warehouse** makes sure what the subscriber holds is in ClickHouse: with the
   loader running as its own service (Docker) it waits for it; embedded, it drains
   with the loader itself (only one process may open the chdb warehouse).
2. **refresh_marts** runs dbt incrementally (`cinema live --refresh-once`): only the
   sessions whose events changed are rebuilt, then the marts, each with its `as_of`.
   The run is recorded in `cinema_marts._mart_refreshes`.

One run at a time and never overlapping itself (`max_active_runs=1`); a run that
takes longer than the cadence delays the next instead of piling up, and catch-up is
off, so a paused DAG resumes with one run, not a backlog. Embedded, `cinema live` does
the same in one process without Airflow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import chain, dag, task

from cinema.settings import marts_refresh_seconds_from_environment

REFRESH_EVERY = timedelta(seconds=marts_refresh_seconds_from_environment())

DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=10),
    # A refresh that cannot finish within a few cadences is stuck: fail it, the next run starts fresh.
    "execution_timeout": max(REFRESH_EVERY * 5, timedelta(minutes=5)),
}


@dag(
    dag_id="cinema_refresh",
    schedule=REFRESH_EVERY,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    is_paused_upon_creation=False,
    dagrun_timeout=max(REFRESH_EVERY * 10, timedelta(minutes=15)),
    default_args=DEFAULT_ARGS,
    tags=["cinema", "live", "dbt"],
    doc_md=__doc__,
)
def cinema_refresh() -> None:
    @task.bash
    def load_warehouse() -> str:
        return "cinema load --until-caught-up"

    @task.bash
    def refresh_marts() -> str:
        return "cinema live --refresh-once"

    chain(load_warehouse(), refresh_marts())


cinema_refresh()
