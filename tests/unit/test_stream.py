"""The merged event stream: determinism, time patterns and each dirty-data kind."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from producer.behaviour import START, Behaviour, SessionEvent
from producer.catalog import load_movies, make_users
from producer.stream import (
    Event,
    PoolArrivals,
    Row,
    SessionRecord,
    World,
    backfill_stream,
    uuid_text,
    viewing_weight,
)
from tests.unit.test_behaviour import replay

START_MS = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday
END_MS = START_MS + 3 * 86_400_000


@pytest.fixture(scope="module")
def world() -> World:
    return World(make_users(300), load_movies())


def run(world: World, seed: int, events: int, dirty_rate: float = 0.0) -> tuple[list[Row], list[SessionRecord]]:
    finished: list[SessionRecord] = []
    stream = backfill_stream(seed, world, Behaviour(), dirty_rate, events, START_MS, END_MS, finished.append)
    return list(stream), finished


def event_of(row: Row) -> Event:
    """The event, whenever it was received."""
    return Event._make(row[:-1])


def session_of(row: Row | Event) -> str:
    """The session id as the ground truth (SessionRecord) spells it."""
    return uuid_text(row.session_id)


def test_same_seed_same_rows_different_seed_different_rows(world):
    first, _ = run(world, 1, 5_000)
    assert first == run(world, 1, 5_000)[0]
    assert first != run(world, 2, 5_000)[0]


def test_the_rows_of_a_seed_are_those_it_has_always_given(world):
    """Rows and ground truth of a dirty stream, as text, against a digest taken from the producer
    of commit c473ab7 (text uuids, plain tuples): packing and naming changed nothing."""
    finished: list[SessionRecord] = []
    digest = hashlib.sha256()
    for row in backfill_stream(11, world, Behaviour(), 0.3, 20_000, START_MS, END_MS, finished.append):
        fields = (uuid_text(row.event_id), uuid_text(row.session_id), *row[2:])
        digest.update("\t".join(map(str, fields)).encode() + b"\n")
    for record in finished:
        digest.update(repr((record.session_id, record.dirty_kind, record.truth)).encode())
    assert digest.hexdigest() == "032f48f7d03b8baa5fa54aa27f970adb3f71867c86ca829295c6f2cedc2e44e7"


def test_exact_count_unique_ids_and_each_session_in_time_order(world):
    rows, finished = run(world, 3, 20_000)
    assert len(rows) == 20_000
    assert len({row.event_id for row in rows}) == 20_000
    by_session = defaultdict(list)
    for row in rows:
        by_session[row.session_id].append(row.event_time_ms)
    assert all(times == sorted(times) for times in by_session.values())
    assert all(record.dirty_kind is None for record in finished)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_sessions_start_inside_the_range_and_cover_it(world, seed):
    rows, _ = run(world, seed, 30_000)
    starts = [row.event_time_ms for row in rows if row.event_type == START]
    assert all(START_MS <= row.event_time_ms < END_MS for row in rows)
    assert START_MS <= min(starts) < START_MS + 6 * 3_600_000
    assert END_MS - 6 * 3_600_000 < max(starts) < END_MS


def test_evenings_and_weekends_are_busier():
    saturday_evening = int(datetime(2026, 11, 7, 21, tzinfo=UTC).timestamp() * 1000)
    tuesday_evening = int(datetime(2026, 11, 3, 21, tzinfo=UTC).timestamp() * 1000)
    tuesday_morning = int(datetime(2026, 11, 3, 4, tzinfo=UTC).timestamp() * 1000)
    assert viewing_weight(saturday_evening, 0) > viewing_weight(tuesday_evening, 0)
    assert viewing_weight(tuesday_evening, 0) > 10 * viewing_weight(tuesday_morning, 0)
    # 21:00 UTC is early morning in Tokyo.
    assert viewing_weight(tuesday_evening, 540) < viewing_weight(tuesday_evening, 0)


def live_countries(world: World, at: datetime, pool: int = 3000) -> Counter[str]:
    """The countries of a live pool's viewers, started at `at`."""
    start_ms = int(at.timestamp() * 1000)
    arrivals = PoolArrivals(random.Random(7), world, start_ms, pool, ramp_ms=30_000)
    countries: Counter[str] = Counter()
    arrival = arrivals.first()
    while arrival is not None:
        countries[arrival[1].country.code] += 1
        arrival = arrivals.after(arrival[0])
    # A session that ends is replaced by a viewer of that moment.
    replacement = arrivals.on_session_end(start_ms)
    assert replacement is not None
    countries[replacement[1].country.code] += 1
    return countries


def test_live_viewers_follow_their_local_evening(world):
    """At a fixed rate (the pool of viewers) it is the mix that moves: at 12:00 UTC it is
    21:00 in Tokyo and 07:00 in New York; at 02:00 UTC the other way round."""
    tokyo_evening = live_countries(world, datetime(2026, 11, 3, 12, tzinfo=UTC))
    new_york_evening = live_countries(world, datetime(2026, 11, 4, 2, tzinfo=UTC))
    assert sum(tokyo_evening.values()) == sum(new_york_evening.values()) == 3001
    assert tokyo_evening["JP"] > 3 * new_york_evening["JP"]
    assert new_york_evening["US"] > 3 * tokyo_evening["US"]


def test_popular_movies_are_watched_more(world):
    rows, _ = run(world, 5, 40_000)
    starts = Counter(row.movie_id for row in rows if row.event_type == START)
    rank = {movie.movie_id: movie.popularity_rank for movie in load_movies()}
    top = sum(count for movie, count in starts.items() if rank[movie] <= 18)
    assert top > 0.3 * sum(starts.values())


@pytest.fixture(scope="module")
def dirty(world) -> tuple[list[Row], list[SessionRecord]]:
    return run(world, 6, 60_000, dirty_rate=0.6)


def test_duplicates_repeat_the_whole_event(dirty):
    rows, finished = dirty
    # Sessions still running when the stream was cut are not finished: judge the finished ones.
    kinds = {record.session_id: record.dirty_kind for record in finished}
    copies = Counter(event_of(row) for row in rows)
    repeated = {session_of(event) for event, count in copies.items() if count > 1 and session_of(event) in kinds}
    assert repeated
    assert {kinds[session] for session in repeated} == {"duplicate"}


def test_late_events_arrive_after_later_events_of_their_session(dirty):
    rows, finished = dirty
    kinds = {record.session_id: record.dirty_kind for record in finished}
    latest_seen: dict[str, int] = {}
    arrived_late = set()
    delivered: set[Event] = set()
    for row in rows:
        if event_of(row) in delivered:
            continue  # a redelivered duplicate, not a late first delivery
        delivered.add(event_of(row))
        session = session_of(row)
        if row.event_time_ms < latest_seen.get(session, 0):
            arrived_late.add(session)
        latest_seen[session] = max(latest_seen.get(session, 0), row.event_time_ms)
    arrived_late &= kinds.keys()
    assert arrived_late
    assert {kinds[session] for session in arrived_late} == {"late"}


def test_orphans_have_no_start_and_no_truth(dirty):
    rows, finished = dirty
    orphans = {record.session_id for record in finished if record.dirty_kind == "orphan"}
    assert orphans
    assert all(record.truth is None for record in finished if record.dirty_kind == "orphan")
    assert not any(row.event_type == START for row in rows if session_of(row) in orphans)


def test_cleaning_recovers_the_truth_of_duplicate_and_late_sessions(dirty):
    rows, finished = dirty
    by_session: dict[str, dict[bytes, Row]] = defaultdict(dict)
    for row in rows:
        by_session[session_of(row)][row.event_id] = row  # deduplicate by event id
    checked = 0
    for record in finished:
        if record.truth is None:
            continue
        events = sorted(by_session[record.session_id].values(), key=lambda row: row.event_time_ms)
        replayed = replay([SessionEvent(row.event_type, row.position_ms, row.event_time_ms) for row in events])
        assert replayed == (record.truth.watched_ms, record.truth.max_position_ms)
        assert len(events) == record.truth.events
        checked += record.dirty_kind is not None
    assert checked > 20


def test_rows_are_received_in_delivery_order_and_clean_ones_when_they_happen(world, dirty):
    """received_at is what makes lateness observable whoever commits first (issue 11).
    (Per session: top-up sessions are delivered after the others but happen earlier.)"""
    rows, finished = dirty
    received_by_session: dict[bytes, list[int]] = defaultdict(list)
    for row in rows:
        received_by_session[row.session_id].append(row.received_ms)
    assert all(received == sorted(received) for received in received_by_session.values())
    kinds = {record.session_id: record.dirty_kind for record in finished}
    held_back = {session_of(row) for row in rows if row.received_ms > row.event_time_ms}
    assert held_back
    assert {kinds[session] for session in held_back if session in kinds} <= {"late", "duplicate"}
    clean, _ = run(world, 3, 5_000)
    assert all(row.received_ms == row.event_time_ms for row in clean)
