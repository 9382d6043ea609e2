-- The loader appends a new version of a film on every change (ReplacingMergeTree
-- by _xid); FINAL keeps the latest one per film.

with

source as (

    select * from {{ source('cinema', 'movies') }} final

),

renamed as (

    select
        movie_id,
        title as movie_title,
        release_year,
        cast(genre as LowCardinality(String)) as genre,
        runtime_seconds,
        _xid as loaded_xid,
        _loaded_at as loaded_at

    from source

)

select * from renamed
