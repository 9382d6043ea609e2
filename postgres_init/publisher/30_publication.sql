-- Events are immutable facts: only their inserts are published, so a retention
-- DELETE on the publisher never removes history downstream. Reference data also
-- publishes updates, which the subscriber re-stamps for the loader.
SELECT 'CREATE PUBLICATION cinema_events FOR TABLE viewing_events WITH (publish = ''insert'')'
WHERE NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'cinema_events')
\gexec

SELECT 'CREATE PUBLICATION cinema_reference FOR TABLE movies, users WITH (publish = ''insert, update'')'
WHERE NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'cinema_reference')
\gexec
