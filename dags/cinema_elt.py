"""
### cinema_elt: viewing events from the publisher to the marts, once per day

1. **generate_events** writes the day's viewing events to the PostgreSQL publisher
   (`cinema generate` for the data interval; the seed comes from the interval, so a
   rerun of the same day finds its chunks already committed and adds nothing).
2. **publisher_position** records the publisher's WAL position right after that.
3. **wait_for_subscriber** waits until logical replication has applied everything
   up to that position on the subscriber (WAL positions, not row counts).
4. **load_warehouse** makes sure everything on the subscriber is in ClickHouse:
   with the loader running as its own service (Docker) it waits for it; embedded,
   only one process may open the chdb warehouse, so it drains with the loader itself.
5. **transform**: dbt through astronomer-cosmos, one task per model, its tests right after it.
6. **reconcile** compares counts: publisher, subscriber, ClickHouse raw, marts.
7. **report** renders the offline HTML report of the marts.

Every step is a `cinema` command or a small function of the `cinema` package, so
what runs here is exactly what a person runs by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, PokeReturnValue, chain, dag, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior, TestIndirectSelection

from cinema.paths import DBT_PROJECT

DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}


def _prepare_dbt(context: Any) -> None:
    """Before each dbt task (dbt runs inside the task's process): export the settings
    profiles.yml reads and, for the embedded warehouse, install the chdb bridge."""
    from cinema.settings import load_settings
    from cinema.transform import prepare_dbt

    prepare_dbt(load_settings())


@dag(
    dag_id="cinema_elt",
    # Daily data intervals (Airflow 3's plain "@daily" has none for manual runs): a run,
    # manual or scheduled, generates the events of one whole UTC day.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    default_args=DEFAULT_ARGS,
    params={
        "events": Param(100_000, type="integer", minimum=1, description="Events generated for the day"),
        "dirty_rate": Param(0.02, type="number", minimum=0, maximum=1, description="Share of dirty sessions"),
        "writers": Param(4, type="integer", minimum=1, maximum=64, description="Concurrent producer writers"),
    },
    tags=["cinema", "elt", "dbt"],
    doc_md=__doc__,
)
def cinema_elt() -> None:
    @task.bash
    def generate_events(params: dict[str, Any], data_interval_start: datetime, data_interval_end: datetime) -> str:
        seed = int(data_interval_start.timestamp())
        return (
            f"cinema generate --start '{data_interval_start:%Y-%m-%d %H:%M:%S}' "
            f"--end '{data_interval_end:%Y-%m-%d %H:%M:%S}' --events {int(params['events'])} --seed {seed} "
            f"--dirty-rate {float(params['dirty_rate'])} --writers {int(params['writers'])}"
        )

    @task
    def publisher_position() -> str:
        from cinema.replication import publisher_lsn
        from cinema.settings import load_settings

        return publisher_lsn(load_settings())

    @task.sensor(poke_interval=2, timeout=900, mode="poke")
    def wait_for_subscriber(target_lsn: str) -> PokeReturnValue:
        from cinema.replication import SubscriptionMissing, remaining_bytes
        from cinema.settings import load_settings

        remaining = remaining_bytes(load_settings(), target_lsn)
        if remaining is None:
            raise SubscriptionMissing("the subscription's replication slot is missing on the publisher")
        print(f"subscriber is {remaining} WAL bytes behind publisher position {target_lsn}")
        return PokeReturnValue(is_done=remaining == 0)

    @task.bash
    def load_warehouse() -> str:
        return "cinema load --until-caught-up"

    transform = DbtTaskGroup(
        group_id="transform",
        project_config=ProjectConfig(
            dbt_project_path=DBT_PROJECT, manifest_path=DBT_PROJECT / "target" / "manifest.json"
        ),
        profile_config=ProfileConfig(
            profile_name="cinema", target_name="warehouse", profiles_yml_filepath=DBT_PROJECT / "profiles.yml"
        ),
        # dbt runs inside the task's process (no interpreter start per task). A test runs
        # after its model once every model it reads exists: `buildable` keeps a mart's
        # relationship test to a staging model out of the staging model's test task.
        execution_config=ExecutionConfig(
            invocation_mode=InvocationMode.DBT_RUNNER, test_indirect_selection=TestIndirectSelection.BUILDABLE
        ),
        render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.AFTER_EACH),
        operator_args={"pre_execute": _prepare_dbt, "install_deps": False},
        default_args=DEFAULT_ARGS,
    )

    @task.bash
    def reconcile() -> str:
        return "cinema check"

    @task.bash
    def report() -> str:
        return "cinema report"

    position = publisher_position()
    chain(
        generate_events(), position, wait_for_subscriber(position), load_warehouse(), transform, reconcile(), report()
    )


cinema_elt()
