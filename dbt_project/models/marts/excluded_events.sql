-- Every delivery that breaks a plausibility rule, with the rule: kept in raw, left
-- out of every other mart's figures, counted here (by `cinema check` and the report).

with

events as (

    select * from {{ ref('stg_cinema__viewing_events') }}
    where exclusion_reason != ''

),

final as (

    select
        delivery_id,
        event_id,
        session_id,
        user_id,
        movie_id,
        device_type,
        event_type,
        position_ms,
        event_time,
        received_at,
        loaded_at,
        cast(exclusion_reason as LowCardinality(String)) as exclusion_reason

    from events

)

select *, {{ marts_as_of() }} as as_of from final
