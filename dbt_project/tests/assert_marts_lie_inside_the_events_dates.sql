-- Every day, session and minute of the marts lies between the first and the last
-- plausible event, and every mart is as of the newest plausible delivery: one
-- implausible timestamp must never stretch or move a mart (a heartbeat dated 2299
-- once grew daily_viewing to 65,536 days through a Date overflow, and placed
-- now_watching and every as_of in 2299).
-- Returns the rows outside.

with

events as (

    select
        min(event_time) as first_event_time,
        max(event_time) as last_event_time,
        -- What as_of must be (1970 over no rows, as macro marts_as_of says).
        max(received_at) as last_received_at

    from {{ ref('stg_cinema__viewing_events') }}
    where exclusion_reason = ''

),

-- Every mart row to check, with the times it spans: one union, so that the events'
-- bounds (a pass over the staging view) are computed once.
mart_rows as (

    select
        'daily_viewing' as mart,
        'day' as kind,
        toString(day) as row_key,
        toDateTime64(day, 6, 'UTC') as starts_at,
        toDateTime64(day, 6, 'UTC') as ends_at
    from {{ ref('daily_viewing') }}

    union all

    select
        'viewing_sessions' as mart,
        'session' as kind,
        toString(session_id) as row_key,
        toDateTime64(started_at, 6, 'UTC') as starts_at,
        toDateTime64(ended_at, 6, 'UTC') as ends_at
    from {{ ref('viewing_sessions') }}

    union all

    select
        'now_watching' as mart,
        'minute' as kind,
        toString(minute) as row_key,
        toDateTime64(minute, 6, 'UTC') as starts_at,
        toDateTime64(minute, 6, 'UTC') as ends_at
    from {{ ref('now_watching') }}

    {% for mart in [
        'viewing_sessions', 'daily_viewing', 'movie_performance', 'movie_dropoff',
        'viewing_heatmap', 'device_country_breakdown', 'excluded_events', 'now_watching'
    ] %}
    union all

    select
        '{{ mart }}' as mart,
        'as_of' as kind,
        toString(as_of) as row_key,
        as_of as starts_at,
        as_of as ends_at
    from {{ ref(mart) }}
    {% endfor %}

)

select
    mart_rows.mart,
    mart_rows.kind,
    mart_rows.row_key

from mart_rows
cross join events
where
    multiIf(
        mart_rows.kind = 'day',
        toDate(mart_rows.starts_at) < toDate(events.first_event_time)
        or toDate(mart_rows.ends_at) > toDate(events.last_event_time),
        mart_rows.kind = 'session',
        mart_rows.starts_at < events.first_event_time or mart_rows.ends_at > events.last_event_time,
        -- now_watching's window ends at the minute of the newest plausible event.
        mart_rows.kind = 'minute',
        mart_rows.starts_at > events.last_event_time
        or mart_rows.starts_at
        < toStartOfMinute(events.last_event_time) - interval {{ var('now_watching_hours') }} hour,
        mart_rows.starts_at != events.last_received_at
    )
