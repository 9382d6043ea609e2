-- Publisher: the OLTP system of record. The producer writes here; CHECK and
-- FOREIGN KEY constraints reject impossible events before they are committed, so
-- nothing downstream ever sees them.

CREATE TABLE IF NOT EXISTS movies (
    movie_id        integer PRIMARY KEY,
    title           text     NOT NULL CHECK (title <> ''),
    release_year    smallint NOT NULL CHECK (release_year BETWEEN 1888 AND 2100),
    genre           text     NOT NULL CHECK (genre <> ''),
    runtime_seconds integer  NOT NULL CHECK (runtime_seconds > 0)
);

CREATE TABLE IF NOT EXISTS users (
    user_id            integer PRIMARY KEY,
    display_name       text        NOT NULL,
    country_code       char(2)     NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    -- Standard-time offset of the user's home; daylight saving is not modelled.
    utc_offset_minutes smallint    NOT NULL CHECK (utc_offset_minutes BETWEEN -720 AND 840),
    plan               text        NOT NULL CHECK (plan IN ('basic', 'standard', 'premium')),
    signed_up_at       timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS viewing_events (
    -- Arrival order on the publisher; the loader's unit of exactly-once.
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The player's id for the event: a redelivered event repeats it, so it is not unique here.
    event_id         uuid        NOT NULL,
    session_id       uuid        NOT NULL,
    user_id          integer     NOT NULL REFERENCES users,
    movie_id         integer     NOT NULL REFERENCES movies,
    device_type      text        NOT NULL CHECK (device_type IN (
        'smart_tv', 'streaming_stick', 'game_console', 'desktop', 'laptop', 'tablet', 'phone')),
    event_type       text        NOT NULL CHECK (event_type IN (
        'start', 'heartbeat', 'pause', 'resume', 'seek', 'stop')),
    position_ms      bigint      NOT NULL CHECK (position_ms >= 0),
    event_time       timestamptz NOT NULL CHECK (event_time >= '2000-01-01'),
    received_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per chunk the producer committed, written in the chunk's own
-- transaction: a rerun of the same generation skips what is already here.
-- Publisher-only bookkeeping, not published.
CREATE TABLE IF NOT EXISTS producer_batches (
    run_key    text        NOT NULL,
    chunk_no   integer     NOT NULL CHECK (chunk_no >= 0),
    events     integer     NOT NULL CHECK (events >= 0),
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_key, chunk_no)
);
