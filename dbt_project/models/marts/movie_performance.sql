-- One row per film in the catalogue, watched or not.

with

movies as (

    select * from {{ ref('stg_cinema__movies') }}

),

sessions as (

    select * from {{ ref('viewing_sessions') }}
    where not is_orphan

),

by_movie as (

    select
        movie_id,
        count() as sessions,
        uniqExact(user_id) as unique_viewers,
        sum(watched_seconds) / 3600 as watch_hours,
        avg(completion_ratio) as avg_completion,
        avg(is_completed) as completion_rate

    from sessions
    group by movie_id

),

final as (

    select
        movies.movie_id as movie_id,
        movies.movie_title as movie_title,
        movies.genre as genre,
        movies.release_year as release_year,
        movies.runtime_seconds as runtime_seconds,
        by_movie.sessions as sessions,
        by_movie.unique_viewers as unique_viewers,
        by_movie.watch_hours as watch_hours,
        by_movie.avg_completion as avg_completion,
        by_movie.completion_rate as completion_rate

    from movies
    left join by_movie on movies.movie_id = by_movie.movie_id

)

select *, {{ marts_as_of() }} as as_of from final
