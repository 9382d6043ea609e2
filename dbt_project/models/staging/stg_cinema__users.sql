-- The loader appends a new version of a user on every change (ReplacingMergeTree
-- by _xid); FINAL keeps the latest one per user.

with

source as (

    select * from {{ source('cinema', 'users') }} final

),

renamed as (

    select
        user_id,
        display_name,
        cast(country_code as LowCardinality(String)) as country_code,
        utc_offset_minutes,
        cast(plan as LowCardinality(String)) as plan,
        signed_up_at,
        _xid as loaded_xid,
        _loaded_at as loaded_at

    from source

)

select * from renamed
