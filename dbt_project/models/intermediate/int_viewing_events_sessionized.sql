-- One row per viewing session, rebuilt from all of its plausible events (rows with
-- an exclusion_reason are left out; excluded_events lists them).
--
-- Incremental by session. A session is rebuilt when the deliveries that count for
-- it differ from those it was built from (new events, late events, redeliveries, a
-- row newly excluded or included, or a previous run that stopped between its delete
-- and its insert), or when it may still be in progress at the horizon of this run;
-- everything else is left alone. A session with no delivery left that counts has
-- nothing to rebuild it from, and delete+insert deletes only the keys it inserts:
-- the pre-hook (macro delete_sessions_that_no_longer_count) deletes those first.
-- Comparing a checksum of the delivery ids rather than a high-water mark of _xid
-- needs no trust in the order transactions commit, so an incremental run equals a
-- full refresh.

with

horizon as (

    -- Sessions without a stop are in progress until the inactivity timeout has passed
    -- at this moment: the data interval's end when the caller passes `as_of`, else
    -- the load time (the newest _loaded_at), never the newest event time, which one
    -- implausible event could move.
    {% if var('as_of', none) %}
    select parseDateTime64BestEffort('{{ var("as_of") }}', 3, 'UTC') as as_of
    {% else %}
    select toDateTime64(max(loaded_at), 3, 'UTC') as as_of
    from {{ ref('stg_cinema__viewing_events') }}
    {% endif %}

),

in_progress_horizon as (

    select as_of - interval {{ var('session_inactivity_timeout_minutes') }} minute as in_progress_after
    from horizon

),

included as (

    select * from {{ ref('stg_cinema__viewing_events') }}
    where exclusion_reason = ''

),

{% if is_incremental() %}

deliveries_by_session as (

    select
        session_id,
        count() as deliveries,
        sum(cityHash64(delivery_id)) as deliveries_checksum

    from included
    group by session_id

),

sessions_to_rebuild as (

    select deliveries_by_session.session_id
    from deliveries_by_session
    where (
        deliveries_by_session.session_id,
        deliveries_by_session.deliveries,
        deliveries_by_session.deliveries_checksum
    ) not in (
        select
            built.session_id,
            built.deliveries,
            built.deliveries_checksum
        from {{ this }} as built
        where
            built.end_reason = 'stopped'
            or (
                built.end_reason = 'abandoned'
                and built.ended_at < (select horizon.in_progress_after from in_progress_horizon as horizon)
            )
    )

),

{% endif %}

events as (

    select * from included
    {% if is_incremental() %}
    where session_id in (select sessions_to_rebuild.session_id from sessions_to_rebuild)
    {% endif %}

),

timelines as (

    select
        session_id,
        argMin(user_id, event_time) as user_id,
        argMin(movie_id, event_time) as movie_id,
        cast(argMin(device_type, event_time) as LowCardinality(String)) as device_type,
        minIf(event_time, not is_duplicate_delivery) as started_at,
        maxIf(event_time, not is_duplicate_delivery) as ended_at,
        maxIf(position_ms, not is_duplicate_delivery) as max_position_ms,
        count() as deliveries,
        sum(cityHash64(delivery_id)) as deliveries_checksum,
        countIf(not is_duplicate_delivery) as events,
        countIf(is_duplicate_delivery) as duplicate_deliveries,
        countIf(is_late_arrival and not is_duplicate_delivery) as late_events,
        countIf(event_type = 'pause' and not is_duplicate_delivery) as pauses,
        countIf(event_type = 'seek' and not is_duplicate_delivery) as seeks,
        countIf(event_type = 'stop' and not is_duplicate_delivery) > 0 as has_stop,
        max(is_orphan_session) as is_orphan,
        max(loaded_xid) as last_loaded_xid,
        max(received_at) as last_received_at,
        -- The session in event-time order: (epoch ms, what the event does to the
        -- player: 1 = now playing, 0 = now not playing, -1 = no change).
        arraySort(
            groupArrayIf(
                (
                    toUnixTimestamp64Milli(event_time),
                    multiIf(
                        event_type in ('start', 'resume'), 1,
                        event_type in ('pause', 'stop'), 0,
                        -1
                    )
                ),
                not is_duplicate_delivery
            )
        ) as timeline

    from events
    group by session_id

),

playback as (

    select
        *,
        timeline.1 as event_times_ms,
        -- Whether the player is playing after each event (heartbeats and seeks keep
        -- the state; before the first start or resume nothing plays).
        arrayFill(state -> state >= 0, timeline.2) as playing_after,
        -- For each event, when the stretch of playback it is part of ends: at the
        -- next event that stops playback, or at the session's last event (nothing
        -- after the last event counts, so an abandoned session ends there).
        arrayReverseFill(
            end_ms -> end_ms >= 0,
            arrayPushBack(
                arrayPopBack(arrayMap((playing, ms) -> if(playing = 1, -1, ms), playing_after, event_times_ms)),
                event_times_ms[-1]
            )
        ) as stretch_ends_ms,
        -- Uninterrupted playback: from each event that starts playing to the end of
        -- its stretch (zero-length ones, a start or resume as the last event, dropped).
        arrayFilter(
            span -> span.2 > span.1,
            arrayMap(
                (playing, was_playing, ms, end_ms) -> if(playing = 1 and was_playing != 1, (ms, end_ms), (0, 0)),
                playing_after,
                arrayPushFront(arrayPopBack(playing_after), -1),
                event_times_ms,
                stretch_ends_ms
            )
        ) as playing_spans,
        arraySum(span -> span.2 - span.1, playing_spans) as watched_ms

    from timelines

),

sessionized as (

    select
        playback.session_id as session_id,
        playback.user_id as user_id,
        playback.movie_id as movie_id,
        playback.device_type as device_type,
        playback.started_at as started_at,
        playback.ended_at as ended_at,
        playback.watched_ms as watched_ms,
        playback.max_position_ms as max_position_ms,
        playback.pauses as pauses,
        playback.seeks as seeks,
        playback.events as events,
        playback.deliveries as deliveries,
        playback.deliveries_checksum as deliveries_checksum,
        playback.duplicate_deliveries as duplicate_deliveries,
        playback.late_events as late_events,
        playback.is_orphan as is_orphan,
        cast(
            multiIf(
                playback.has_stop, 'stopped',
                playback.ended_at >= horizon.in_progress_after, 'in_progress',
                'abandoned'
            ) as LowCardinality(String)
        ) as end_reason,
        -- Playing spans as two aligned arrays of epoch ms: [started, ended).
        playback.playing_spans.1 as playing_started_ms,
        playback.playing_spans.2 as playing_ended_ms,
        playback.last_loaded_xid as last_loaded_xid,
        playback.last_received_at as last_received_at

    from playback
    cross join in_progress_horizon as horizon

)

select * from sessionized
