"""The dbt project's structure, read from the manifest `dbt parse` writes (no warehouse needed).

These pin what other parts of the system build on: every mart in cinema_marts (the
only database Metabase may read), the marts' column contract, tested keys, the
sessionization edge cases covered by unit tests, and the dashboard's exposure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from dbt.cli.main import dbtRunner

from cinema.paths import DBT_PROJECT, PROJECT_ROOT

CONTRACT = {
    "viewing_sessions": [
        "session_id",
        "user_id",
        "movie_id",
        "movie_title",
        "genre",
        "device_type",
        "country_code",
        "plan",
        "started_at",
        "ended_at",
        "watched_ms",
        "watched_seconds",
        "pauses",
        "seeks",
        "max_position_ms",
        "max_position_seconds",
        "runtime_seconds",
        "completion_ratio",
        "end_reason",
        "events",
        "duplicate_deliveries",
        "late_events",
        "is_orphan",
        "is_completed",
    ],
    "daily_viewing": ["day", "active_viewers", "sessions", "watch_hours", "avg_session_minutes", "completion_rate"],
    "movie_performance": [
        "movie_id",
        "movie_title",
        "genre",
        "release_year",
        "runtime_seconds",
        "sessions",
        "unique_viewers",
        "watch_hours",
        "avg_completion",
        "completion_rate",
    ],
    "movie_dropoff": ["movie_id", "movie_title", "position_bucket_pct", "sessions_reaching", "share_reaching"],
    "viewing_heatmap": ["weekday", "hour", "watch_minutes"],
    "device_country_breakdown": [
        "device_type",
        "device_category",
        "country_code",
        "country_name",
        "region",
        "sessions",
        "viewers",
        "watch_hours",
        "completion_rate",
    ],
    "excluded_events": [
        "delivery_id",
        "event_id",
        "session_id",
        "user_id",
        "movie_id",
        "device_type",
        "event_type",
        "position_ms",
        "event_time",
        "received_at",
        "loaded_at",
        "exclusion_reason",
    ],
    "now_watching": ["minute", "viewers", "playing_sessions", "sessions_in_progress"],
}
# Every mart says how current it is, in its last column.
for _columns in CONTRACT.values():
    _columns.append("as_of")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Any:
    target = tmp_path_factory.mktemp("dbt-parse")
    result = dbtRunner().invoke(
        [
            "parse",
            *("--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT)),
            *("--target-path", str(target), "--log-path", str(target), "--quiet"),
        ]
    )
    assert result.success, result.exception
    return result.result


def models(manifest: Any) -> dict[str, Any]:
    return {node.name: node for node in manifest.nodes.values() if node.resource_type == "model"}


def layer(node: Any) -> str:
    return str(node.fqn[1])


def test_each_layer_builds_into_its_own_database(manifest: Any) -> None:
    databases = {name: node.schema for name, node in models(manifest).items()}
    assert {name for name, database in databases.items() if database == "cinema_marts"} == set(CONTRACT)
    for name, node in models(manifest).items():
        assert databases[name] == f"cinema_{layer(node)}", name


def test_layers_follow_the_naming_and_only_staging_reads_sources(manifest: Any) -> None:
    patterns = {"staging": r"stg_[a-z]+__[a-z_]+s", "intermediate": r"int_[a-z_]+s_[a-z]+", "marts": r"[a-z_]+"}
    for name, node in models(manifest).items():
        assert re.fullmatch(patterns[layer(node)], name), name
        assert bool(node.sources) == (layer(node) == "staging"), name
        if layer(node) == "staging":
            assert node.config.materialized == "view", name


def test_marts_keep_their_column_contract(manifest: Any) -> None:
    marts = {name: node for name, node in models(manifest).items() if layer(node) == "marts"}
    for name, node in marts.items():
        assert node.config.contract.enforced, name
        assert list(node.columns) == CONTRACT[name], name


def test_every_model_and_seed_has_a_unique_key_test(manifest: Any) -> None:
    tested = {
        node.attached_node
        for node in manifest.nodes.values()
        if node.resource_type == "test" and getattr(node, "test_metadata", None) and node.test_metadata.name == "unique"
    }
    keyed = {unique_id for unique_id, node in manifest.nodes.items() if node.resource_type in ("model", "seed")}
    assert keyed - tested == set()


def test_sessionization_edge_cases_have_unit_tests(manifest: Any) -> None:
    names = {test.name for test in manifest.unit_tests.values()}
    for edge_case in ("midnight", "backward_seek", "abandoned", "duplicated", "out_of_order", "orphan", "late"):
        assert any(edge_case in name for name in names), edge_case


def test_clickhouse_physical_settings_live_in_dbt_project_yml(manifest: Any) -> None:
    for name, node in models(manifest).items():
        assert "config(" not in node.raw_code, name
        if node.config.materialized in ("table", "incremental"):
            assert node.config.get("engine") == "MergeTree()", name
            assert node.config.get("order_by"), name
    sessionized = models(manifest)["int_viewing_events_sessionized"]
    assert sessionized.config.incremental_strategy == "delete+insert"
    assert sessionized.config.unique_key == "session_id"


def test_sources_declare_freshness_on_the_loaders_timestamp(manifest: Any) -> None:
    events = next(source for source in manifest.sources.values() if source.name == "viewing_events")
    assert events.loaded_at_field == "_loaded_at"
    assert events.freshness.error_after.count is not None


def test_the_metabase_dashboard_is_an_exposure_of_every_mart_it_queries(manifest: Any) -> None:
    (exposure,) = manifest.exposures.values()
    assert exposure.type == "dashboard"
    depends_on = {manifest.nodes[unique_id].name for unique_id in exposure.depends_on.nodes}
    dashboard = json.loads(Path(PROJECT_ROOT / "metabase" / "dashboard.json").read_text())
    queried = {
        table for card in dashboard["cards"] for table in re.findall(r"cinema_marts\.(\w+)", " ".join(card["sql"]))
    }
    assert queried
    assert queried <= depends_on <= set(CONTRACT)


def test_only_tests_that_describe_the_source_are_warnings(manifest: Any) -> None:
    """A dirty source row may warn; it never stops the build (issue 11). The marts' own
    invariants stay errors."""
    tests = [node for node in manifest.nodes.values() if node.resource_type == "test"]
    warnings = {node.name for node in tests if node.config.severity.lower() == "warn"}
    assert warnings == {
        "relationships_stg_cinema__users_country_code__country_code__ref_country_regions_",
        "relationships_stg_cinema__viewing_events_device_type__device_type__ref_device_categories_",
        "accepted_values_stg_cinema__users_plan__basic__standard__premium",
        "accepted_values_stg_cinema__viewing_events_event_type__start__heartbeat__pause__resume__seek__stop",
    }
    errors = {node.name for node in tests} - warnings
    for invariant in (
        "assert_marts_lie_inside_the_events_dates",
        "assert_viewing_sessions_are_possible",
        "assert_marts_account_for_all_watch_time",
        "unique_stg_cinema__viewing_events_event_id",
        "relationships_viewing_sessions_user_id__user_id__ref_stg_cinema__users_",
    ):
        assert invariant in errors


def test_every_exclusion_rule_has_a_unit_test_example(manifest: Any) -> None:
    staging = next(node for node in manifest.nodes.values() if node.name == "stg_cinema__viewing_events")
    (reasons,) = [
        node.test_metadata.kwargs["values"]
        for node in manifest.nodes.values()
        if node.resource_type == "test"
        and getattr(node, "test_metadata", None)
        and node.test_metadata.name == "accepted_values"
        and node.attached_node == staging.unique_id
        and node.column_name == "exclusion_reason"
    ]
    expected = {
        row["exclusion_reason"]
        for test in manifest.unit_tests.values()
        if test.model == "stg_cinema__viewing_events"
        for row in test.expect.rows
        if "exclusion_reason" in row
    }
    assert set(reasons) == expected
