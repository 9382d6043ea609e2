-- First start of the ClickHouse container (the image's
-- docker-entrypoint-initdb.d, run as CLICKHOUSE_USER): the databases dbt
-- builds into. They exist before the first dbt run so that Metabase can
-- connect to cinema_marts at once; dbt creates only what is missing.
-- The raw database is CLICKHOUSE_DB, created by the entrypoint itself.
CREATE DATABASE IF NOT EXISTS cinema_staging;
CREATE DATABASE IF NOT EXISTS cinema_intermediate;
CREATE DATABASE IF NOT EXISTS cinema_marts;
