CREATE DATABASE IF NOT EXISTS `cinema_raw`;

CREATE TABLE IF NOT EXISTS `cinema_raw`.`users` (
    user_id Int32,
    display_name String,
    country_code LowCardinality(String),
    utc_offset_minutes Int16,
    plan LowCardinality(String),
    signed_up_at DateTime64(6, 'UTC'),
    _xid UInt64 CODEC(ZSTD(1)),
    _loaded_at DateTime64(6, 'UTC') DEFAULT now64(6) CODEC(ZSTD(1)),
    INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(_xid)
ORDER BY user_id;

CREATE TABLE IF NOT EXISTS `cinema_raw`.`movies` (
    movie_id Int32,
    title String,
    release_year Int16,
    genre LowCardinality(String),
    runtime_seconds Int32,
    _xid UInt64 CODEC(ZSTD(1)),
    _loaded_at DateTime64(6, 'UTC') DEFAULT now64(6) CODEC(ZSTD(1)),
    INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(_xid)
ORDER BY movie_id;

CREATE TABLE IF NOT EXISTS `cinema_raw`.`viewing_events` (
    id Int64 CODEC(DoubleDelta, ZSTD(1)),
    event_id UUID,
    session_id UUID,
    user_id Int32 CODEC(ZSTD(1)),
    movie_id Int32 CODEC(ZSTD(1)),
    device_type LowCardinality(String),
    event_type LowCardinality(String),
    position_ms Int64 CODEC(Delta, ZSTD(1)),
    event_time DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    received_at DateTime64(6, 'UTC') CODEC(ZSTD(1)),
    _xid UInt64 CODEC(ZSTD(1)),
    _loaded_at DateTime64(6, 'UTC') DEFAULT now64(6) CODEC(ZSTD(1)),
    INDEX _xid_minmax _xid TYPE minmax GRANULARITY 1,
    INDEX id_minmax id TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (session_id, event_time, id);

CREATE TABLE IF NOT EXISTS `cinema_raw`.`_loader_batches` (
    from_xid UInt64,
    watermark UInt64,
    rows UInt64,
    events UInt64,
    quarantined UInt64,
    started_at DateTime64(6, 'UTC'),
    visible_at DateTime64(6, 'UTC'),
    loader String,
    sequence UInt64,
    kind LowCardinality(String),
    dedup_until UInt64,
    system_identifier Int64,
    subscription_oid UInt64,
    subscriber_started_micros Int64,
    epoch UInt64,
    max_xid UInt64
)
ENGINE = MergeTree
ORDER BY watermark;

CREATE TABLE IF NOT EXISTS `cinema_raw`.`_quarantine` (
    table_name LowCardinality(String),
    row_key String,
    _xid UInt64,
    reason String,
    row_json String,
    quarantined_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY (table_name, _xid, row_key);

CREATE TABLE IF NOT EXISTS `cinema_raw`.`_loader_epochs` (
    epoch UInt64,
    loader String,
    started_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY epoch;
