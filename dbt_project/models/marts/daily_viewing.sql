-- One row per UTC day. Watch time and active viewers count the playback that
-- happened that day (a film watched across midnight counts on both days); sessions,
-- their average length and completion rate count the sessions that started that day.

with

sessions as (

    select * from {{ ref('viewing_sessions') }}
    where not is_orphan

),

spans as (

    select
        session_id,
        user_id,
        playing_started_ms,
        playing_ended_ms,
        0 as clock_offset_ms

    from {{ ref('int_viewing_events_sessionized') }}
    where not is_orphan

),

watching as (

    {{ split_playing_spans('spans', 86400000) }}

),

watched_by_day as (

    select
        toDate(fromUnixTimestamp64Milli(period_start_ms, 'UTC')) as day,
        uniqExact(user_id) as active_viewers,
        sum(played_ms) / 3600000 as watch_hours

    from watching
    group by day

),

started_by_day as (

    select
        toDate(started_at) as day,
        count() as sessions,
        avg(watched_seconds) / 60 as avg_session_minutes,
        avg(is_completed) as completion_rate

    from sessions
    group by day

),

days as (

    select day from watched_by_day
    union distinct
    select day from started_by_day

),

final as (

    select
        days.day as day,
        watched_by_day.active_viewers as active_viewers,
        started_by_day.sessions as sessions,
        watched_by_day.watch_hours as watch_hours,
        -- 0 on a day when no session started (only playback spilling over midnight).
        started_by_day.avg_session_minutes as avg_session_minutes,
        started_by_day.completion_rate as completion_rate

    from days
    left join watched_by_day on days.day = watched_by_day.day
    left join started_by_day on days.day = started_by_day.day

)

select *, {{ marts_as_of() }} as as_of from final
