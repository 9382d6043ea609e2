-- Where viewers drop off: per film and position bucket (10 %, 20 % .. 100 % of the
-- runtime), how many sessions got at least that far. Long format, one row per
-- (film, bucket), so a dashboard can draw retention curves without array columns.

with

movies as (

    select * from {{ ref('stg_cinema__movies') }}

),

sessions as (

    select * from {{ ref('viewing_sessions') }}
    where not is_orphan

),

buckets as (

    select toUInt8(number * 10 + 10) as position_bucket_pct
    from numbers(10)

),

reached as (

    select
        sessions.movie_id as movie_id,
        buckets.position_bucket_pct as position_bucket_pct,
        count() as movie_sessions,
        -- Integer arithmetic: exactly "max position >= bucket % of the runtime".
        countIf(
            sessions.max_position_ms * 100 >= toInt64(buckets.position_bucket_pct) * sessions.runtime_seconds * 1000
        ) as sessions_reaching

    from sessions
    cross join buckets
    group by movie_id, position_bucket_pct

),

final as (

    select
        movies.movie_id as movie_id,
        movies.movie_title as movie_title,
        buckets.position_bucket_pct as position_bucket_pct,
        reached.sessions_reaching as sessions_reaching,
        if(reached.movie_sessions = 0, 0, reached.sessions_reaching / reached.movie_sessions) as share_reaching

    from movies
    cross join buckets
    left join reached
        on movies.movie_id = reached.movie_id and buckets.position_bucket_pct = reached.position_bucket_pct

)

select *, {{ marts_as_of() }} as as_of from final
