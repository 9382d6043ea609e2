{% macro split_playing_spans(sessions, period_ms) %}
    {#-
        Playback cut at the boundaries of a clock period (a day, an hour), so that
        time is attributed to the period it happened in. `sessions` has session_id,
        user_id, playing_started_ms, playing_ended_ms and clock_offset_ms (added to
        UTC epoch ms to get the clock the periods are on: 0 for UTC, the viewer's
        offset for local time).
        One row per (session, period) touched: period_start_ms on that clock, and
        played_ms in it.
    -#}
    select
        session_id,
        user_id,
        period * {{ period_ms }} as period_start_ms,
        least(ended_ms + clock_offset_ms, (period + 1) * {{ period_ms }})
        - greatest(started_ms + clock_offset_ms, period * {{ period_ms }}) as played_ms

    from {{ sessions }}
    array join
        playing_started_ms as started_ms,
        playing_ended_ms as ended_ms
    array join range(
        intDiv(started_ms + clock_offset_ms, {{ period_ms }}),
        intDiv(ended_ms + clock_offset_ms - 1, {{ period_ms }}) + 1
    ) as period
{% endmacro %}
