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

as_of as (

    {% for mart in [
        'viewing_sessions', 'daily_viewing', 'movie_performance', 'movie_dropoff',
        'viewing_heatmap', 'device_country_breakdown', 'excluded_events', 'now_watching'
    ] %}
    select
        '{{ mart }}' as mart,
        as_of
    from {{ ref(mart) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

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

    union all

    -- The window ends at the minute of the newest plausible event, not after it.
    select
        'now_watching' as mart,
        toString(now_watching.minute) as row_key
    from {{ ref('now_watching') }} as now_watching
    cross join events
    where
        now_watching.minute > events.last_event_time
        or now_watching.minute
        < toStartOfMinute(events.last_event_time) - interval {{ var('now_watching_hours') }} hour

    union all

    select
        concat(as_of.mart, '.as_of') as mart,
        toString(as_of.as_of) as row_key
    from as_of
    cross join events
    where as_of.as_of != events.last_received_at

)

select * from outside
