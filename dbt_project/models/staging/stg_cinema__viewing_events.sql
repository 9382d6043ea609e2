-- One row per delivery of a player event, with the dirty-data flags every later
-- model relies on. Nothing is dropped here: a row that breaks a plausibility rule
-- gets its exclusion_reason (and later models leave it out of every figure), a
-- redelivery is flagged, so sessions can both ignore it and count it.

with

source as (

    select * from {{ source('cinema', 'viewing_events') }}

),

users as (

    select user_id from {{ ref('stg_cinema__users') }}

),

movies as (

    select
        movie_id,
        runtime_seconds
    from {{ ref('stg_cinema__movies') }}

),

renamed as (

    select
        source.id as delivery_id,
        source.event_id as event_id,
        source.session_id as session_id,
        source.user_id as user_id,
        source.movie_id as movie_id,
        cast(source.device_type as LowCardinality(String)) as device_type,
        cast(source.event_type as LowCardinality(String)) as event_type,
        source.position_ms as position_ms,
        source.event_time as event_time,
        source.received_at as received_at,
        source._xid as loaded_xid,
        source._loaded_at as loaded_at,
        -- coalesce: dbt's relationships test reads this view with join_use_nulls = 1.
        coalesce(movies.runtime_seconds, 0) as runtime_seconds,
        source.user_id in (select users.user_id from users) as is_known_user,
        source.movie_id in (select known_movies.movie_id from movies as known_movies) as is_known_movie

    from source
    left join movies on source.movie_id = movies.movie_id

),

-- The rules a single delivery can break, in the order they are reported.
row_checked as (

    select
        *,
        multiIf(
            event_time > received_at + interval {{ var('event_time_future_tolerance_minutes') }} minute,
            'event_time_after_received_at',
            event_time < received_at - interval {{ var('event_time_max_age_days') }} day,
            'event_time_too_old',
            received_at > loaded_at + interval {{ var('event_time_future_tolerance_minutes') }} minute,
            'received_at_after_loaded_at',
            not is_known_user, 'unknown_user',
            not is_known_movie, 'unknown_movie',
            position_ms > toInt64(runtime_seconds) * 1000 + {{ var('position_tolerance_seconds') }} * 1000,
            'position_beyond_runtime',
            ''
        ) as row_exclusion_reason

    from renamed

),

repeated_event_ids as (

    select event_id
    from source
    group by event_id
    having count() > 1

),

-- Every delivery of an event_id follows the one that counts: the earliest received,
-- then the lowest delivery_id. A redelivery with another payload is a conflict.
-- Only repeated event_ids need the comparison (grouped, not a window over all rows).
redelivered as (

    select
        event_id,
        argMin(delivery_id, (received_at, delivery_id)) as winning_delivery_id,
        argMin(
            (session_id, user_id, movie_id, device_type, event_type, position_ms, event_time),
            (received_at, delivery_id)
        ) as winning_payload,
        argMin(row_exclusion_reason, (received_at, delivery_id)) as winning_exclusion_reason

    from row_checked
    where event_id in (select repeated_event_ids.event_id from repeated_event_ids)
    group by event_id

),

event_checked as (

    select
        row_checked.* except (row_exclusion_reason),
        -- An event_id delivered once has no match (0, or NULL under join_use_nulls).
        coalesce(redelivered.winning_delivery_id, 0) = 0 as is_single_delivery,
        if(is_single_delivery, row_checked.delivery_id, assumeNotNull(redelivered.winning_delivery_id))
            as winning_delivery_id,
        multiIf(
            is_single_delivery, row_checked.row_exclusion_reason,
            redelivered.winning_exclusion_reason != '', redelivered.winning_exclusion_reason,
            -- A redelivery is judged by its own stamps too: one received in the future
            -- would otherwise count as a duplicate and carry its received_at into as_of.
            row_checked.row_exclusion_reason != '', row_checked.row_exclusion_reason,
            (
                row_checked.session_id,
                row_checked.user_id,
                row_checked.movie_id,
                row_checked.device_type,
                row_checked.event_type,
                row_checked.position_ms,
                row_checked.event_time
            ) != redelivered.winning_payload,
            'conflicting_redelivery',
            ''
        ) as event_exclusion_reason

    from row_checked
    left join redelivered on row_checked.event_id = redelivered.event_id

),

-- A session lasts at most max_session_hours from its first plausible event.
session_checked as (

    select
        * except (event_exclusion_reason),
        if(
            event_exclusion_reason = ''
            and event_time > minIf(event_time, event_exclusion_reason = '') over (
                session_timeline rows between unbounded preceding and unbounded following
            ) + interval {{ var('max_session_hours') }} hour,
            'beyond_session_span',
            event_exclusion_reason
        ) as exclusion_reason

    from event_checked
    window session_timeline as (partition by session_id order by event_time, event_id, delivery_id)

),

-- Every window here shares one sort (a session in event-time order); which rows a
-- flag looks at is an -If condition, not another partition.
flagged as (

    select
        * except (winning_delivery_id, is_single_delivery, is_known_user, is_known_movie, runtime_seconds),

        -- Duplicates: a redelivery of an event that counts, with the same payload.
        toBool(exclusion_reason = '' and delivery_id != winning_delivery_id) as is_duplicate_delivery,

        -- Late arrivals: received after an event of the same session that happened
        -- later (arrival is received_at, which the sender stamps, never the order of
        -- ids, which concurrent writers interleave). Sessions are ordered by
        -- event_time, so late events still count normally.
        toBool(
            exclusion_reason = ''
            and delivery_id = winning_delivery_id
            and coalesce(
                received_at > minOrNullIf(
                    received_at, exclusion_reason = '' and delivery_id = winning_delivery_id
                ) over (session_timeline rows between 1 following and unbounded following),
                false
            )
        ) as is_late_arrival,

        -- Orphans: the session has no plausible start event (a player that lost its session).
        toBool(
            exclusion_reason = ''
            and countIf(event_type = 'start' and exclusion_reason = '') over (
                session_timeline rows between unbounded preceding and unbounded following
            ) = 0
        ) as is_orphan_session

    from session_checked
    window session_timeline as (partition by session_id order by event_time, event_id, delivery_id)

)

select * from flagged
