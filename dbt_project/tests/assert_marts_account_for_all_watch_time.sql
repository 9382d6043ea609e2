-- Every mart that reports watch time must add up to the sessions' watched time:
-- cutting playback at midnight or at local hours may move it, never lose it.
-- Returns one row per mart whose total is off by more than a rounding error.

with

sessions as (

    select sum(watched_seconds) / 3600 as watch_hours
    from {{ ref('viewing_sessions') }}
    where not is_orphan

),

mart_totals as (

    select
        'daily_viewing' as mart,
        sum(watch_hours) as watch_hours
    from {{ ref('daily_viewing') }}

    union all

    select
        'viewing_heatmap' as mart,
        sum(watch_minutes) / 60 as watch_hours
    from {{ ref('viewing_heatmap') }}

    union all

    select
        'movie_performance' as mart,
        sum(watch_hours) as watch_hours
    from {{ ref('movie_performance') }}

    union all

    select
        'device_country_breakdown' as mart,
        sum(watch_hours) as watch_hours
    from {{ ref('device_country_breakdown') }}

)

select
    mart_totals.mart,
    mart_totals.watch_hours,
    sessions.watch_hours as sessions_watch_hours

from mart_totals
cross join sessions
where abs(mart_totals.watch_hours - sessions.watch_hours) > 1e-6 * greatest(1, sessions.watch_hours)
