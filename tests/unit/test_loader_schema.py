"""The raw schema's DDL and the row-validity rule, as text (the real tables: tests/integration/test_loader.py)."""

from __future__ import annotations

from loader.schema import MOVIES, RAW_TABLES, USERS, VIEWING_EVENTS, bookkeeping_ddl, upgrade_ddl
from loader.source import valid


def test_reference_data_loads_before_the_events_that_point_at_it():
    assert [table.name for table in RAW_TABLES] == ["users", "movies", "viewing_events"]


def test_every_table_gets_loaded_at_and_an_xid_index():
    for table in RAW_TABLES:
        ddl = table.ddl("cinema_raw")
        assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS `cinema_raw`.`{table.name}` (")
        assert "_loaded_at DateTime64(6, 'UTC') DEFAULT now64(6)" in ddl
        assert "INDEX _xid_minmax _xid TYPE minmax" in ddl
        assert table.column_names[-1] == "_xid"


def test_events_are_sorted_by_session_and_partitioned_by_month_with_codecs():
    ddl = VIEWING_EVENTS.ddl("cinema_raw")
    assert "ENGINE = MergeTree\nPARTITION BY toYYYYMM(event_time)\nORDER BY (session_id, event_time, id)" in ddl
    assert "id Int64 CODEC(DoubleDelta, ZSTD(1))" in ddl
    assert "event_time DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))" in ddl
    assert "device_type LowCardinality(String)" in ddl


def test_reference_tables_keep_the_newest_version_by_xid():
    assert USERS.engine == "ENGINE = ReplacingMergeTree(_xid)\nORDER BY user_id"
    assert MOVIES.engine == "ENGINE = ReplacingMergeTree(_xid)\nORDER BY movie_id"
    assert not USERS.append_only
    assert VIEWING_EVENTS.append_only


def test_the_watermark_table_binds_each_record_to_the_subscriber_and_the_fence():
    batches, quarantine, epochs = bookkeeping_ddl("raw")
    assert "`raw`.`_loader_batches`" in batches
    assert batches.endswith("ORDER BY watermark")
    for column in ("sequence UInt64", "dedup_until UInt64", "system_identifier Int64", "epoch UInt64"):
        assert column in batches
    assert "row_json String" in quarantine
    assert "`raw`.`_loader_epochs`" in epochs


def test_an_older_watermark_table_gets_the_new_columns_and_nothing_else():
    (statement,) = upgrade_ddl("raw")
    assert statement.startswith("ALTER TABLE `raw`.`_loader_batches` ADD COLUMN IF NOT EXISTS sequence UInt64")
    assert statement.count("ADD COLUMN IF NOT EXISTS") == 8


def test_a_row_is_loadable_only_with_every_timestamp_inside_datetime64s_range():
    assert valid(VIEWING_EVENTS) == (
        "(event_time >= '1900-01-01 00:00:00+00' AND event_time < '2300-01-01 00:00:00+00' AND "
        "received_at >= '1900-01-01 00:00:00+00' AND received_at < '2300-01-01 00:00:00+00')"
    )
    assert valid(USERS) == "(signed_up_at >= '1900-01-01 00:00:00+00' AND signed_up_at < '2300-01-01 00:00:00+00')"
    assert valid(MOVIES) == "true"
