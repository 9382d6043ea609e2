-- Least-privilege roles on the publisher. Passwords come from the environment
-- (\getenv), so they never appear in a file or on a command line.
\getenv producer_password POSTGRES_PRODUCER_PASSWORD
\getenv replication_password POSTGRES_REPLICATION_PASSWORD
\getenv monitor_password POSTGRES_MONITOR_PASSWORD

SELECT format('CREATE ROLE %I', role_name)
FROM unnest(ARRAY['cinema_producer', 'cinema_replicator', 'cinema_monitor']) AS role_name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name)
\gexec

ALTER ROLE cinema_producer WITH LOGIN NOREPLICATION PASSWORD :'producer_password';
ALTER ROLE cinema_replicator WITH LOGIN REPLICATION PASSWORD :'replication_password';
ALTER ROLE cinema_monitor WITH LOGIN NOREPLICATION PASSWORD :'monitor_password';

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO cinema_producer, cinema_replicator, cinema_monitor;

-- The producer appends events and reference rows, and reads only its own bookkeeping
-- and the reference keys (INSERT ... ON CONFLICT (key) DO NOTHING must see them).
GRANT INSERT ON viewing_events, movies, users TO cinema_producer;
GRANT SELECT (movie_id) ON movies TO cinema_producer;
GRANT SELECT (user_id) ON users TO cinema_producer;
GRANT SELECT, INSERT ON producer_batches TO cinema_producer;

-- The subscription's initial copy reads the published tables.
GRANT SELECT ON viewing_events, movies, users TO cinema_replicator;

-- Status, sensors and reconciliation: counts and WAL positions, nothing else.
GRANT pg_monitor TO cinema_monitor;
GRANT SELECT ON viewing_events, movies, users, producer_batches TO cinema_monitor;
