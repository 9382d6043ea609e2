-- Invariants of a session that no data, however dirty, may break: playback fits
-- between the first and last event, completion is a ratio, and the completed flag
-- agrees with it. Returns the sessions that break one.

select
    session_id,
    watched_ms,
    started_at,
    ended_at,
    completion_ratio,
    is_completed

from {{ ref('viewing_sessions') }}
where
    watched_ms < 0
    or watched_ms > dateDiff('millisecond', started_at, ended_at)
    or completion_ratio < 0
    or completion_ratio > 1
    or is_completed != (completion_ratio >= {{ var('completed_at_ratio') }})
    or events = 0
