-- The loader cuts the subscriber's rows only at flushed WAL (README, "Why exactly once"):
-- a WAL writer flushing every 20 ms instead of PostgreSQL's 200 keeps that from costing
-- freshness (measured). Set here, so the embedded stack and Compose get the same.
ALTER SYSTEM SET wal_writer_delay = '20ms';
SELECT pg_reload_conf();
