-- Least-privilege roles on the subscriber; passwords come from the environment.
\getenv loader_password POSTGRES_LOADER_PASSWORD
\getenv monitor_password POSTGRES_MONITOR_PASSWORD

SELECT format('CREATE ROLE %I', role_name)
FROM unnest(ARRAY['cinema_loader', 'cinema_monitor']) AS role_name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name)
\gexec

ALTER ROLE cinema_loader WITH LOGIN NOREPLICATION PASSWORD :'loader_password';
-- ClickHouse's postgresql() drops the UTC offset of the timestamps it reads: the
-- loader's sessions (its own and ClickHouse's pulls) must see them in UTC.
ALTER ROLE cinema_loader SET TimeZone = 'UTC';
ALTER ROLE cinema_monitor WITH LOGIN NOREPLICATION PASSWORD :'monitor_password';

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO cinema_loader, cinema_monitor;

-- The loader (and ClickHouse pulling on its behalf) only reads.
GRANT SELECT ON viewing_events, movies, users TO cinema_loader;
-- To name the session whose open transaction stalls loading (pid, application, state,
-- transaction age): other roles' sessions show those only to pg_read_all_stats.
GRANT pg_read_all_stats TO cinema_loader;

GRANT pg_monitor TO cinema_monitor;
GRANT SELECT ON viewing_events, movies, users TO cinema_monitor;
