-- Every day and session of the marts lies between the first and the last plausible
-- event: one implausible timestamp must never stretch a mart (a heartbeat dated 2299
-- once grew daily_viewing to 65,536 days through a Date overflow).
-- Returns the rows outside.

with

events as (

    select
        min(event_time) as first_event_time,
        max(event_time) as last_event_time

    from {{ ref('stg_cinema__viewing_events') }}
    where exclusion_reason = ''

),

outside as (

    select
        'daily_viewing' as mart,
        toString(daily_viewing.day) as row_key
    from {{ ref('daily_viewing') }} as daily_viewing
    cross join events
    where
        daily_viewing.day < toDate(events.first_event_time)
        or daily_viewing.day > toDate(events.last_event_time)

    union all

    select
        'viewing_sessions' as mart,
        toString(viewing_sessions.session_id) as row_key
    from {{ ref('viewing_sessions') }} as viewing_sessions
    cross join events
    where
        viewing_sessions.started_at < events.first_event_time
        or viewing_sessions.ended_at > events.last_event_time

)

select * from outside
