"""daily_viewing has one attribution rule per column, stated alike in dbt, the README and the report (issue 11)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import yaml

from cinema.paths import DBT_PROJECT
from cinema.report.page import DAILY_VIEWING_CAPTION, render
from tests.unit.test_report import marts

README = (DBT_PROJECT.parent / "README.md").read_text()
BY_PLAYBACK_DAY = {"active_viewers", "watch_hours"}
BY_START_DAY = {"sessions", "avg_session_minutes", "completion_rate"}
# How current the mart is, not a figure: no day to attribute.
AS_OF = "as_of"


def daily_viewing_columns() -> dict[str, str]:
    models = yaml.safe_load((DBT_PROJECT / "models" / "marts" / "_marts__models.yml").read_text())["models"]
    (model,) = [model for model in models if model["name"] == "daily_viewing"]
    return {column["name"]: column.get("description", "") for column in model["columns"]}


def test_every_column_of_daily_viewing_states_its_attribution_rule():
    columns = daily_viewing_columns()
    assert set(columns) == {"day", *BY_PLAYBACK_DAY, *BY_START_DAY, AS_OF}
    assert {name for name, text in columns.items() if text.startswith("By playback day:")} == BY_PLAYBACK_DAY
    assert {name for name, text in columns.items() if text.startswith("By start day:")} == BY_START_DAY


def test_the_readme_and_the_report_caption_state_both_rules():
    assert "`active_viewers` and `watch_hours` count the playback that happened that day" in " ".join(README.split())
    assert "`sessions`, `avg_session_minutes` and `completion_rate` count the sessions that started that day" in (
        " ".join(README.split())
    )
    assert "by the day the playback happened" in DAILY_VIEWING_CAPTION
    assert "sessions by the day they started" in DAILY_VIEWING_CAPTION
    page = render(marts(), datetime(2026, 3, 5, tzinfo=UTC))
    assert DAILY_VIEWING_CAPTION in page


def test_the_report_counts_the_excluded_deliveries():
    example = marts()
    page = render(
        replace(example, totals=replace(example.totals, excluded_events=1_234)), datetime(2026, 3, 5, tzinfo=UTC)
    )
    assert "1,234 implausible deliveries are left out of every figure" in " ".join(page.split())
