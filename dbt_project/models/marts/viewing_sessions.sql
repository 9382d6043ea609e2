-- One row per viewing session with its film and viewer. Orphan fragments (no start
-- event) are kept and flagged; the other marts leave them out.

with

sessions as (

    select * from {{ ref('int_viewing_events_sessionized') }}

),

movies as (

    select * from {{ ref('stg_cinema__movies') }}

),

users as (

    select * from {{ ref('stg_cinema__users') }}

),

enriched as (

    select
        sessions.session_id as session_id,
        sessions.user_id as user_id,
        sessions.movie_id as movie_id,
        movies.movie_title as movie_title,
        movies.genre as genre,
        sessions.device_type as device_type,
        users.country_code as country_code,
        users.plan as plan,
        sessions.started_at as started_at,
        sessions.ended_at as ended_at,
        sessions.watched_ms as watched_ms,
        sessions.watched_ms / 1000 as watched_seconds,
        sessions.pauses as pauses,
        sessions.seeks as seeks,
        sessions.max_position_ms as max_position_ms,
        sessions.max_position_ms / 1000 as max_position_seconds,
        movies.runtime_seconds as runtime_seconds,
        least(1, sessions.max_position_ms / (movies.runtime_seconds * 1000)) as completion_ratio,
        sessions.end_reason as end_reason,
        sessions.events as events,
        sessions.duplicate_deliveries as duplicate_deliveries,
        sessions.late_events as late_events,
        sessions.is_orphan as is_orphan

    from sessions
    left join movies on sessions.movie_id = movies.movie_id
    left join users on sessions.user_id = users.user_id

),

final as (

    select
        *,
        toBool(completion_ratio >= {{ var('completed_at_ratio') }}) as is_completed

    from enriched

)

select *, {{ marts_as_of() }} as as_of from final
