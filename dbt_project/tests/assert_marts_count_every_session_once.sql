-- The aggregate marts count each non-orphan session exactly once.
-- Returns one row per mart whose session count differs.

with

sessions as (

    select count() as sessions
    from {{ ref('viewing_sessions') }}
    where not is_orphan

),

mart_totals as (

    select
        'daily_viewing' as mart,
        sum(sessions) as sessions
    from {{ ref('daily_viewing') }}

    union all

    select
        'movie_performance' as mart,
        sum(sessions) as sessions
    from {{ ref('movie_performance') }}

    union all

    select
        'device_country_breakdown' as mart,
        sum(sessions) as sessions
    from {{ ref('device_country_breakdown') }}

)

select
    mart_totals.mart,
    mart_totals.sessions,
    sessions.sessions as viewing_sessions

from mart_totals
cross join sessions
where mart_totals.sessions != sessions.sessions
