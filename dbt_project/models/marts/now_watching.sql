-- One row per UTC minute over the last hours before the newest event that counts
-- (var now_watching_hours): viewers whose film was playing in that minute, and
-- sessions in progress in it (between their first and last event, playing or
-- paused). Minutes count back from the data, not the clock, so a rebuild of the
-- same raw rows gives the same rows, and `cinema live` keeps the newest minute current.
-- The newest event is a session's last one (orphans too): an excluded event, one
-- dated 2299 say, never places the window.

with

horizon as (

    select
        toStartOfMinute(max(ended_at)) as last_minute,
        last_minute - interval {{ var('now_watching_hours') }} hour as first_minute

    from {{ ref('int_viewing_events_sessionized') }}

),

minutes as (

    select horizon.first_minute + toIntervalMinute(minute_offsets.number) as minute
    from horizon
    cross join numbers({{ var('now_watching_hours') | int * 60 + 1 }}) as minute_offsets

),

recent_sessions as (

    select sessions.*
    from {{ ref('int_viewing_events_sessionized') }} as sessions
    cross join horizon
    where
        not sessions.is_orphan
        and sessions.ended_at >= horizon.first_minute

),

spans as (

    select
        session_id,
        user_id,
        playing_started_ms,
        playing_ended_ms,
        0 as clock_offset_ms

    from recent_sessions

),

watching as (

    {{ split_playing_spans('spans', 60000) }}

),

viewers_by_minute as (

    select
        toDateTime(intDiv(period_start_ms, 1000), 'UTC') as minute,
        uniqExact(user_id) as viewers,
        uniqExact(session_id) as playing_sessions

    from watching
    group by minute

),

sessions_by_minute as (

    select
        toDateTime(session_minute * 60, 'UTC') as minute,
        count() as sessions_in_progress

    from recent_sessions
    array join
        range(
            intDiv(toUnixTimestamp(started_at), 60),
            intDiv(toUnixTimestamp(ended_at), 60) + 1
        ) as session_minute
    group by minute

),

final as (

    select
        minutes.minute as minute,
        viewers_by_minute.viewers as viewers,
        viewers_by_minute.playing_sessions as playing_sessions,
        sessions_by_minute.sessions_in_progress as sessions_in_progress

    from minutes
    left join viewers_by_minute on minutes.minute = viewers_by_minute.minute
    left join sessions_by_minute on minutes.minute = sessions_by_minute.minute

)

select
    *, {{ marts_as_of() }} as as_of
from final
