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
        movies.runtime_seconds as runtime_seconds,
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

-- Every delivery of an event_id follows the one that counts: the earliest received,
-- then the lowest delivery_id. A redelivery with another payload is a conflict.
winners as (

    select
        *,
        argMin(delivery_id, (received_at, delivery_id)) over by_event as winning_delivery_id,
        argMin(
            (session_id, user_id, movie_id, device_type, event_type, position_ms, event_time),
            (received_at, delivery_id)
        ) over by_event as winning_payload,
        argMin(row_exclusion_reason, (received_at, delivery_id)) over by_event as winning_exclusion_reason

    from row_checked
    window by_event as (partition by event_id)

),

event_checked as (

    select
        * except (winning_payload, winning_exclusion_reason, row_exclusion_reason),
        multiIf(
            winning_exclusion_reason != '', winning_exclusion_reason,
            (session_id, user_id, movie_id, device_type, event_type, position_ms, event_time) != winning_payload,
            'conflicting_redelivery',
            ''
        ) as event_exclusion_reason

    from winners

),

-- A session lasts at most max_session_hours from its first plausible event.
session_checked as (

    select
        * except (event_exclusion_reason),
        if(
            event_exclusion_reason = ''
            and event_time > min(event_time) over by_included_session + interval {{ var('max_session_hours') }} hour,
            'beyond_session_span',
            event_exclusion_reason
        ) as exclusion_reason

    from event_checked
    window by_included_session as (partition by session_id, event_exclusion_reason = '')

),

flagged as (

    select
        * except (winning_delivery_id, is_known_user, is_known_movie, runtime_seconds),

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
                received_at > minOrNull(received_at) over (
                    counted_timeline rows between 1 following and unbounded following
                ),
                false
            )
        ) as is_late_arrival,

        -- Orphans: the session has no plausible start event (a player that lost its session).
        toBool(
            exclusion_reason = ''
            and countIf(event_type = 'start') over (
                included_timeline rows between unbounded preceding and unbounded following
            ) = 0
        ) as is_orphan_session

    from session_checked
    window
        counted_timeline as (
            partition by session_id, exclusion_reason = '' and delivery_id = winning_delivery_id
            order by event_time, event_id, delivery_id
        ),
        included_timeline as (
            partition by session_id, exclusion_reason = ''
            order by event_time, event_id, delivery_id
        )

)

select * from flagged
