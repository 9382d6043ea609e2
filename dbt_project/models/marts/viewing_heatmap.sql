-- Watch minutes by weekday (1 = Monday) and hour of day in the viewer's local
-- time (standard time: users.utc_offset_minutes), every one of the 168 cells.

with

users as (

    select * from {{ ref('stg_cinema__users') }}

),

spans as (

    select
        sessions.session_id as session_id,
        sessions.user_id as user_id,
        sessions.playing_started_ms as playing_started_ms,
        sessions.playing_ended_ms as playing_ended_ms,
        -- toTimeZone needs a constant zone, so move the clock by the offset instead.
        toInt64(users.utc_offset_minutes) * 60000 as clock_offset_ms

    from {{ ref('int_viewing_events_sessionized') }} as sessions
    left join users on sessions.user_id = users.user_id
    where not sessions.is_orphan

),

watching as (

    {{ split_playing_spans('spans', 3600000) }}

),

watched_by_cell as (

    select
        toDayOfWeek(fromUnixTimestamp64Milli(period_start_ms, 'UTC')) as weekday,
        toHour(fromUnixTimestamp64Milli(period_start_ms, 'UTC')) as hour,
        sum(played_ms) / 60000 as watch_minutes

    from watching
    group by weekday, hour

),

cells as (

    select
        toUInt8(number % 7 + 1) as weekday,
        toUInt8(intDiv(number, 7)) as hour

    from numbers(7 * 24)

),

final as (

    select
        cells.weekday as weekday,
        cells.hour as hour,
        toFloat64(watched_by_cell.watch_minutes) as watch_minutes

    from cells
    left join watched_by_cell
        on cells.weekday = watched_by_cell.weekday and cells.hour = watched_by_cell.hour

)

select *, {{ marts_as_of() }} as as_of from final
