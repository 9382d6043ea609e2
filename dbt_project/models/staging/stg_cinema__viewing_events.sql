-- One row per delivery of a player event, with the dirty-data flags every later
-- model relies on. Nothing is dropped here: a redelivery is flagged, not removed,
-- so sessions can both ignore it and count it.

with

source as (

    select * from {{ source('cinema', 'viewing_events') }}

),

renamed as (

    select
        id as delivery_id,
        event_id,
        session_id,
        user_id,
        movie_id,
        cast(device_type as LowCardinality(String)) as device_type,
        cast(event_type as LowCardinality(String)) as event_type,
        position_ms,
        event_time,
        received_at,
        _xid as loaded_xid,
        _loaded_at as loaded_at

    from source

),

flagged as (

    select
        *,

        -- Duplicates: a redelivered event repeats its event_id (and, being the same
        -- event, its event_time). Only the first delivery, the lowest id, counts.
        toBool(
            event_id = lagInFrame(event_id) over (
                session_timeline rows between 1 preceding and current row
            )
        ) as is_duplicate_delivery,

        -- Late arrivals: delivered after an event of the same session that happened
        -- later. Sessions are ordered by event_time, so they still count normally.
        toBool(
            coalesce(
                delivery_id > minOrNull(delivery_id) over (
                    session_timeline rows between 1 following and unbounded following
                ),
                false
            )
        ) as is_late_arrival,

        -- Orphans: the session has no start event (a player that lost its session).
        toBool(
            countIf(event_type = 'start') over (
                session_timeline rows between unbounded preceding and unbounded following
            ) = 0
        ) as is_orphan_session

    from renamed
    window session_timeline as (
        partition by session_id
        order by event_time, event_id, delivery_id
    )

)

select * from flagged
