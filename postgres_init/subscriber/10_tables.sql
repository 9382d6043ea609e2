-- Subscriber: the logical replica the loader reads. Same columns as the publisher,
-- plus `_xid`, the subscriber transaction that applied (or last changed) the row.
--
-- Why `_xid`: ids are assigned at INSERT but rows become visible at COMMIT, so with
-- concurrent writers a poller reading `id > last_id` skips rows whose transaction
-- commits late. Every row whose `_xid` is below pg_snapshot_xmin(pg_current_snapshot())
-- belongs to a finished transaction, and no later commit can add a row there: reading
-- [previous xmin, current xmin) windows therefore misses nothing and repeats nothing.
-- xid8 is stored as bigint (it never exceeds 2^63) so every client and ClickHouse's
-- postgresql() function can compare it.
--
-- No identity and no foreign keys here: replication applies the publisher's values,
-- and the publisher already enforced them.

CREATE TABLE IF NOT EXISTS movies (
    movie_id        integer PRIMARY KEY,
    title           text     NOT NULL,
    release_year    smallint NOT NULL,
    genre           text     NOT NULL,
    runtime_seconds integer  NOT NULL,
    _xid            bigint   NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)
);

CREATE TABLE IF NOT EXISTS users (
    user_id            integer     PRIMARY KEY,
    display_name       text        NOT NULL,
    country_code       char(2)     NOT NULL,
    utc_offset_minutes smallint    NOT NULL,
    plan               text        NOT NULL,
    signed_up_at       timestamptz NOT NULL,
    _xid               bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)
);

CREATE TABLE IF NOT EXISTS viewing_events (
    id          bigint      PRIMARY KEY,
    event_id    uuid        NOT NULL,
    session_id  uuid        NOT NULL,
    user_id     integer     NOT NULL,
    movie_id    integer     NOT NULL,
    device_type text        NOT NULL,
    event_type  text        NOT NULL,
    position_ms bigint      NOT NULL,
    event_time  timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    _xid        bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)
);

CREATE INDEX IF NOT EXISTS viewing_events_xid_idx ON viewing_events (_xid);
CREATE INDEX IF NOT EXISTS movies_xid_idx ON movies (_xid);
CREATE INDEX IF NOT EXISTS users_xid_idx ON users (_xid);

-- Reference rows can be updated on the publisher; a column default only fires on
-- INSERT, so a trigger re-stamps `_xid` on UPDATE too. Replication applies changes
-- with session_replication_role = replica, where only ALWAYS triggers fire.
CREATE OR REPLACE FUNCTION stamp_applying_xid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW._xid := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER movies_stamp_xid
BEFORE INSERT OR UPDATE ON movies
FOR EACH ROW EXECUTE FUNCTION stamp_applying_xid();
ALTER TABLE movies ENABLE ALWAYS TRIGGER movies_stamp_xid;

CREATE OR REPLACE TRIGGER users_stamp_xid
BEFORE INSERT OR UPDATE ON users
FOR EACH ROW EXECUTE FUNCTION stamp_applying_xid();
ALTER TABLE users ENABLE ALWAYS TRIGGER users_stamp_xid;
