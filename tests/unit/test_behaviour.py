"""The viewing-session state machine, checked against an independent replay of its events."""

from __future__ import annotations

import itertools
import random

import pytest

from producer.behaviour import HEARTBEAT, PAUSE, RESUME, SEEK, START, STOP, Behaviour, Session
from producer.catalog import load_movies

SESSIONS = 1500


def simulate(number: int, behaviour: Behaviour | None = None) -> tuple[Session, list[tuple[str, int, int]]]:
    rng = random.Random(f"test/{number}")
    movie = rng.choice(load_movies())
    session = Session(rng, movie, 1_700_000_000_000, behaviour or Behaviour())
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return session, events


def replay(events: list[tuple[str, int, int]]) -> tuple[int, int]:
    """Watched ms and max position, from the events alone: the rule the marts implement."""
    watched, playing = 0, False
    for (event_type, _, time_ms), (_, _, next_time_ms) in itertools.pairwise(events):
        if event_type in (START, RESUME):
            playing = True
        elif event_type in (PAUSE, STOP):
            playing = False
        if playing:
            watched += next_time_ms - time_ms
    return watched, max(position for _, position, _ in events)


@pytest.fixture(scope="module")
def sessions() -> list[tuple[Session, list[tuple[str, int, int]]]]:
    return [simulate(number) for number in range(SESSIONS)]


def test_every_session_starts_with_start_and_nothing_follows_stop(sessions):
    for _, events in sessions:
        assert events[0][0] == START
        assert all(event_type != START for event_type, _, _ in events[1:])
        stops = [index for index, (event_type, _, _) in enumerate(events) if event_type == STOP]
        assert stops in ([], [len(events) - 1])


def test_event_times_increase_by_at_least_a_second(sessions):
    for _, events in sessions:
        times = [time_ms for _, _, time_ms in events]
        assert all(later - earlier >= 1000 for earlier, later in itertools.pairwise(times))


def test_heartbeats_only_while_playing_and_positions_follow_playback(sessions):
    for session, events in sessions:
        runtime = session.movie.runtime_ms
        playing = False
        for (event_type, position, time_ms), (next_type, next_position, next_time) in itertools.pairwise(events):
            if event_type in (START, RESUME):
                playing = True
            elif event_type == PAUSE:
                playing = False
            if next_type == HEARTBEAT:
                assert playing, "heartbeat while paused"
            if next_type in (HEARTBEAT, PAUSE, STOP) and playing:
                assert next_position == min(runtime, position + next_time - time_ms)
            if next_type in (RESUME, STOP) and not playing:
                assert next_position == position, "position moved while paused"
            assert 0 <= next_position <= runtime


def test_truth_equals_replay_of_the_events(sessions):
    for session, events in sessions:
        truth = session.truth()
        assert (truth.watched_ms, truth.max_position_ms) == replay(events)
        assert truth.events == len(events)
        assert truth.pauses == sum(event_type == PAUSE for event_type, _, _ in events)
        assert truth.seeks == sum(event_type == SEEK for event_type, _, _ in events)
        assert truth.stopped == (events[-1][0] == STOP)
        assert truth.started_ms == events[0][2]
        assert truth.ended_ms == events[-1][2]


def test_behaviour_is_realistic_in_aggregate(sessions):
    truths = [session.truth() for session, _ in sessions]
    completion_rate = sum(truth.completed for truth in truths) / len(truths)
    assert 0.3 < completion_rate < 0.8
    assert 0.05 < sum(not truth.stopped for truth in truths) / len(truths) < 0.4
    assert any(truth.pauses for truth in truths)
    assert any(truth.seeks for truth in truths)


def test_same_seed_same_session():
    assert simulate(7)[1] == simulate(7)[1]
    assert simulate(7)[1] != simulate(8)[1]


def test_heartbeat_interval_is_respected():
    _, events = simulate(3, Behaviour(heartbeat_ms=10_000))
    gaps = [
        later[2] - earlier[2]
        for earlier, later in itertools.pairwise(events)
        if later[0] == HEARTBEAT and earlier[0] in (START, RESUME, HEARTBEAT, SEEK)
    ]
    assert gaps
    assert set(gaps) == {10_000}
