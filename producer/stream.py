"""The event stream: many overlapping sessions, delivered in arrival order.

Sessions start by a time-varying arrival process (backfill) or to keep a pool of
viewers busy (live). Their events are merged by delivery time; optional dirty data
delays or repeats some deliveries. Everything derives from the seed, so the same
plan always yields the same rows in the same order, whoever writes them.

Dirty data kinds (each chosen for a whole session, with probability `dirty_rate`):
- duplicate: some of the session's events are delivered twice, seconds to minutes
  apart, with the same event_id (at-least-once delivery from the player).
- late: some events are held back minutes to hours (a device that was offline), so
  they arrive after events that happened later.
- orphan: besides the (clean) session, a fragment of one to three events with a
  fresh session_id and no start event (a player that lost its session state).
Cleaning duplicates and ordering by event time recover the true session, so the
ground truth of duplicate and late sessions is the true one; orphans have none.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, count, islice
from typing import Any, NamedTuple

from producer.behaviour import HEARTBEAT, PAUSE, SEEK, STOP, Behaviour, Session, SessionTruth
from producer.catalog import Movie, User

DIRTY_KINDS = ("duplicate", "late", "orphan")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Relative chance of starting a film by local hour: quiet nights, a lunchtime bump,
# the evening peak around 21:00.
HOURLY_WEIGHT = (
    0.30,
    0.16,
    0.08,
    0.05,
    0.04,
    0.05,
    0.10,
    0.18,
    0.22,
    0.26,
    0.30,
    0.36,
    0.46,
    0.48,
    0.44,
    0.46,
    0.55,
    0.72,
    0.95,
    1.35,
    1.75,
    1.90,
    1.55,
    0.85,
)
WEEKEND_LIFT = 1.35  # Saturday and Sunday, all day
FRIDAY_EVENING_LIFT = 1.2  # Friday from 18:00
MAX_WEIGHT = max(HOURLY_WEIGHT) * WEEKEND_LIFT


class Event(NamedTuple):
    """An event as the player sends it, its ids in the 16 bytes PostgreSQL's binary COPY
    sends for a uuid (`uuid.UUID(bytes=...)` reads them), its time in epoch ms."""

    event_id: bytes
    session_id: bytes
    user_id: int
    movie_id: int
    device_type: str
    event_type: str
    position_ms: int
    event_time_ms: int


class Row(NamedTuple):
    """A row as delivered: the event and when the publisher received it (epoch ms), the
    simulated arrival, equal to the event time unless the delivery was held back."""

    event_id: bytes
    session_id: bytes
    user_id: int
    movie_id: int
    device_type: str
    event_type: str
    position_ms: int
    event_time_ms: int
    received_ms: int


# Rows are built with tuple.__new__ on the hot path: the generated __new__ of a NamedTuple
# is one Python call more per row (measured in the README's dependency notes).
_new_row = tuple.__new__


def local_hour_and_weekday(time_ms: int, utc_offset_minutes: int) -> tuple[int, int]:
    local = time_ms + utc_offset_minutes * 60_000
    # 1970-01-01 was a Thursday (weekday 3, Monday = 0).
    return (local // HOUR_MS) % 24, (local // DAY_MS + 3) % 7


def viewing_weight(time_ms: int, utc_offset_minutes: int) -> float:
    hour, weekday = local_hour_and_weekday(time_ms, utc_offset_minutes)
    weight = HOURLY_WEIGHT[hour]
    if weekday >= 5:
        weight *= WEEKEND_LIFT
    elif weekday == 4 and hour >= 18:
        weight *= FRIDAY_EVENING_LIFT
    return weight


# Version 4 (random) UUID: clear the version and variant bits, then set them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_uuid(rng: random.Random) -> bytes:
    """A seeded version-4 UUID as its 16 bytes: a fifth of the cost of its text (uuid.UUID
    itself was once the producer's hot spot)."""
    return ((rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET).to_bytes(16)


def uuid_text(uuid_bytes: bytes) -> str:
    return str(uuid.UUID(bytes=uuid_bytes))


class World:
    """Who watches what, where and on which screen."""

    def __init__(self, users: Sequence[User], movies: Sequence[Movie]) -> None:
        by_country: dict[str, list[User]] = {}
        for user in users:
            by_country.setdefault(user.country.code, []).append(user)
        self.countries = [group[0].country for group in by_country.values()]
        self._country_cum = list(accumulate(country.share for country in self.countries))
        self._users = [by_country[country.code] for country in self.countries]
        self._user_cum = [list(accumulate(user.activity for user in group)) for group in self._users]
        self.movies = tuple(movies)
        # Popularity skew: a Zipf-like long tail over the catalog's popularity ranking.
        self._movie_weight = [movie.popularity_rank**-0.9 for movie in self.movies]

    def pick_country(self, rng: random.Random) -> int:
        return bisect(self._country_cum, rng.random() * self._country_cum[-1])

    def pick_user(self, rng: random.Random, country_index: int) -> User:
        cum = self._user_cum[country_index]
        return self._users[country_index][bisect(cum, rng.random() * cum[-1])]

    def pick_viewer(self, rng: random.Random, time_ms: int) -> User | None:
        """One candidate viewer by country share, kept with the viewing weight of their local
        time (thinning): evenings and weekends keep most, nights few."""
        country = self.pick_country(rng)
        offset = self.countries[country].utc_offset_minutes
        if rng.random() * MAX_WEIGHT < viewing_weight(time_ms, offset):
            return self.pick_user(rng, country)
        return None

    def pick_movie(self, rng: random.Random, user: User) -> Movie:
        weights = [
            weight * (2.5 if movie.genre in user.favourite_genres else 1.0)
            for movie, weight in zip(self.movies, self._movie_weight, strict=True)
        ]
        return rng.choices(self.movies, weights=weights)[0]

    @staticmethod
    def pick_device(rng: random.Random, user: User, time_ms: int) -> str:
        hour, _ = local_hour_and_weekday(time_ms, user.country.utc_offset_minutes)
        evening = hour >= 18 or hour < 1
        big_screen = ("smart_tv", "streaming_stick", "game_console")
        weights = [
            (3.0 if evening else 1.5) if device in big_screen else (0.8 if evening else 1.5) for device in user.devices
        ]
        return rng.choices(user.devices, weights=weights)[0]

    def mean_acceptance(self, start_ms: int, end_ms: int) -> float:
        """Share of candidate arrivals the time-of-day weighting keeps over a range."""
        hours = range(start_ms + HOUR_MS // 2, max(end_ms, start_ms + HOUR_MS), HOUR_MS)
        shares = [country.share / self._country_cum[-1] for country in self.countries]
        return sum(
            share * viewing_weight(hour, country.utc_offset_minutes) / MAX_WEIGHT
            for hour in hours
            for share, country in zip(shares, self.countries, strict=True)
        ) / len(hours)


class Arrivals:
    """When sessions start and who starts them."""

    def first(self) -> tuple[int, User] | None:
        raise NotImplementedError

    def after(self, time_ms: int) -> tuple[int, User] | None:
        """The arrival following one at `time_ms`."""
        raise NotImplementedError

    def on_session_end(self, time_ms: int) -> tuple[int, User] | None:
        """An arrival triggered by a session ending (live mode keeps its pool full)."""
        return None

    def top_up(self) -> tuple[int, User] | None:
        """One more arrival once all others have played out, if the stream may grow."""
        return None


class BackfillArrivals(Arrivals):
    """A non-homogeneous Poisson process by thinning: candidates at a constant rate,
    each kept with the viewing weight of its country's local time, until `end_ms`.

    The rate is set a little low on purpose (`backfill_rate`): when the process has
    run through the range and the stream still wants rows, `top_up` adds sessions at
    times drawn from the same weighted distribution over the range. So every session
    starts inside [start, end) and the row count is still exact; top-up sessions are
    statistically identical to the others, only delivered after them."""

    def __init__(self, rng: random.Random, world: World, start_ms: int, end_ms: int, sessions_per_ms: float) -> None:
        self._rng = rng
        self._world = world
        self._start_ms = start_ms
        self._end_ms = end_ms
        self._candidates_per_ms = sessions_per_ms

    def first(self) -> tuple[int, User] | None:
        return self.after(self._start_ms)

    def after(self, time_ms: int) -> tuple[int, User] | None:
        while True:
            time_ms += max(1, int(self._rng.expovariate(self._candidates_per_ms)))
            if time_ms >= self._end_ms:
                return None
            if user := self._world.pick_viewer(self._rng, time_ms):
                return time_ms, user

    def top_up(self) -> tuple[int, User] | None:
        while True:
            time_ms = self._rng.randrange(self._start_ms, self._end_ms)
            if user := self._world.pick_viewer(self._rng, time_ms):
                return time_ms, user


class PoolArrivals(Arrivals):
    """Live mode: `pool` viewers start within the first heartbeat interval, and each
    session that ends is replaced, so the event rate is steady from the first seconds.
    Who starts follows the viewers' local time as in a backfill: at a fixed rate it is
    the mix that moves, towards the countries where it is evening."""

    def __init__(self, rng: random.Random, world: World, start_ms: int, pool: int, ramp_ms: int) -> None:
        self._rng = rng
        self._world = world
        self._start_ms = start_ms
        self._pool = pool
        self._ramp_ms = ramp_ms
        self._started = 0

    def _arrival(self, time_ms: int) -> tuple[int, User]:
        while True:
            if user := self._world.pick_viewer(self._rng, time_ms):
                return time_ms, user

    def first(self) -> tuple[int, User] | None:
        return self.after(self._start_ms)

    def after(self, time_ms: int) -> tuple[int, User] | None:
        if self._started >= self._pool:
            return None
        self._started += 1
        return self._arrival(self._start_ms + self._ramp_ms * self._started // self._pool)

    def on_session_end(self, time_ms: int) -> tuple[int, User] | None:
        return self._arrival(time_ms + MIN_REPLACEMENT_GAP_MS)


MIN_REPLACEMENT_GAP_MS = 1_000
UNDERSHOOT = 0.9


# slots: a live pool holds one of each per viewer.
@dataclass(slots=True)
class SessionRecord:
    session_id: str
    user_id: int
    movie_id: int
    device_type: str
    dirty_kind: str | None
    truth: SessionTruth | None = None
    pending_deliveries: int = 0
    simulation_over: bool = False


@dataclass(slots=True)
class _Live:
    session: Session
    record: SessionRecord
    id_rng: random.Random
    # Only a session whose deliveries are delayed or repeated draws from it after its start.
    dirty_rng: random.Random | None
    session_id: bytes
    user_id: int
    movie_id: int


# Heap entry kinds; the sequence number keeps equal times in creation order.
_ARRIVAL, _EVENT, _DELIVERY = 0, 1, 2
# (time ms, sequence, kind, then per kind: user / live session and its event type / record and row).
_Entry = tuple[int, int, int, Any, Any]


@dataclass
class EventStream:
    """Iterate to get rows in delivery order; `on_finished` receives each session
    once all of its rows have been delivered. Nothing is delivered at or after
    `end_ms`: sessions still running then are cut there (and never finished)."""

    seed: int
    world: World
    arrivals: Arrivals
    behaviour: Behaviour
    dirty_rate: float
    on_finished: Callable[[SessionRecord], None]
    end_ms: int | None = None
    _heap: list[_Entry] = field(default_factory=list)
    _sequence: Iterator[int] = field(default_factory=count)
    _sessions_started: int = 0

    def _push(self, time_ms: int, kind: int, first: object, second: object = None) -> None:
        heapq.heappush(self._heap, (time_ms, next(self._sequence), kind, first, second))

    def _push_arrival(self, arrival: tuple[int, User] | None) -> bool:
        if arrival is None:
            return False
        self._push(arrival[0], _ARRIVAL, arrival[1])
        return True

    def __iter__(self) -> Iterator[Row]:
        heap, pop = self._heap, heapq.heappop
        end_ms = self.end_ms if self.end_ms is not None else math.inf
        self._push_arrival(self.arrivals.first())
        while heap or self._push_arrival(self.arrivals.top_up()):
            time_ms, _, kind, first, second = pop(heap)
            if time_ms >= end_ms:
                continue
            if kind == _EVENT:
                row = self._deliver_event(first, second)
                if row is not None:
                    yield row
                self._advance(first)
            elif kind == _ARRIVAL:
                self._start_session(time_ms, first)
                self._push_arrival(self.arrivals.after(time_ms))
            else:
                first.pending_deliveries -= 1
                # Received when it is delivered: a held-back event shows its lateness.
                yield _new_row(Row, (*second[:-1], time_ms))
                self._finish_if_complete(first)

    def _start_session(self, time_ms: int, user: User) -> None:
        number = self._sessions_started
        self._sessions_started += 1
        rng = random.Random(f"{self.seed}/session/{number}")
        dirty_rng = random.Random(f"{self.seed}/dirty/{number}")
        movie = self.world.pick_movie(rng, user)
        device = self.world.pick_device(rng, user, time_ms)
        dirty_kind = dirty_rng.choice(DIRTY_KINDS) if dirty_rng.random() < self.dirty_rate else None
        session_id = new_uuid(rng)
        record = SessionRecord(
            uuid_text(session_id),
            user.user_id,
            movie.movie_id,
            device,
            dirty_kind if dirty_kind != "orphan" else None,
        )
        session = Session(rng, movie, time_ms, self.behaviour)
        # A clean session (most of a live pool) does not keep its dirty generator: about 2.5 KB less
        # per viewer in memory, and the same draws, since none are made from it after this.
        kept_dirty_rng = dirty_rng if record.dirty_kind is not None else None
        live = _Live(session, record, rng, kept_dirty_rng, session_id, user.user_id, movie.movie_id)
        if dirty_kind == "orphan":
            self._schedule_orphan(dirty_rng, user, movie, device, time_ms)
        self._advance(live)

    def _advance(self, live: _Live) -> None:
        session = live.session
        event_type = session.advance()
        if event_type is None:
            live.record.truth = session.truth()
            live.record.simulation_over = True
            self._finish_if_complete(live.record)
            self._push_arrival(self.arrivals.on_session_end(session.time_ms))
        else:
            # A session has one event in the heap at a time and advances only once it is
            # delivered: until then its position and time are that event's.
            self._push(session.time_ms, _EVENT, live, event_type)

    def _deliver_event(self, live: _Live, event_type: str) -> Row | None:
        """The row to deliver now, if it is not held back; a redelivery is scheduled too."""
        record, session = live.record, live.session
        time_ms = session.time_ms
        row: Row = _new_row(
            Row,
            (
                new_uuid(live.id_rng),
                live.session_id,
                live.user_id,
                live.movie_id,
                record.device_type,
                event_type,
                session.position_ms,
                time_ms,
                time_ms,
            ),
        )
        rng = live.dirty_rng
        if rng is None:  # a clean session
            return row
        kind = record.dirty_kind
        if kind == "late" and rng.random() < 0.15:
            self._delay(record, row, time_ms + rng.randrange(2 * 60_000, 3 * HOUR_MS))
            return None
        if kind == "duplicate" and rng.random() < 0.2:
            self._delay(record, row, time_ms + rng.randrange(1_000, 10 * 60_000))
        return row

    def _delay(self, record: SessionRecord, row: Row, deliver_at_ms: int) -> None:
        record.pending_deliveries += 1
        self._push(deliver_at_ms, _DELIVERY, record, row)

    def _schedule_orphan(self, rng: random.Random, user: User, movie: Movie, device: str, time_ms: int) -> None:
        session_id = new_uuid(rng)
        record = SessionRecord(uuid_text(session_id), user.user_id, movie.movie_id, device, "orphan")
        record.simulation_over = True
        event_time = time_ms + rng.randrange(5 * 60_000, HOUR_MS)
        for _ in range(rng.randint(1, 3)):
            event_type = rng.choice((HEARTBEAT, PAUSE, SEEK, STOP))
            position = rng.randrange(0, movie.runtime_ms)
            row = Row(
                new_uuid(rng),
                session_id,
                user.user_id,
                movie.movie_id,
                device,
                event_type,
                position,
                event_time,
                event_time,
            )
            self._delay(record, row, event_time)
            event_time += rng.randrange(1_000, 10 * 60_000)

    def _finish_if_complete(self, record: SessionRecord) -> None:
        if record.simulation_over and record.pending_deliveries == 0:
            self.on_finished(record)


def backfill_rate(world: World, behaviour: Behaviour, seed: int, events: int, start_ms: int, end_ms: int) -> float:
    """Candidate arrivals per millisecond for about `events` rows over [start, end).

    A pilot simulation estimates events per session. The rate aims 10% low, so the
    range is nearly always run through before the count is reached, and
    `BackfillArrivals.top_up` supplies the rest inside the range."""
    pilot_rng = random.Random(f"{seed}/pilot")
    sizes = []
    for number in range(400):
        rng = random.Random(f"{seed}/pilot/{number}")
        user = world.pick_user(pilot_rng, world.pick_country(pilot_rng))
        session = Session(rng, world.pick_movie(rng, user), 0, behaviour)
        while session.advance() is not None:
            pass
        sizes.append(session.events)
    events_per_session = sum(sizes) / len(sizes)
    sessions = math.ceil(events / events_per_session)
    span = max(end_ms - start_ms, HOUR_MS)
    return UNDERSHOOT * sessions / (span * world.mean_acceptance(start_ms, end_ms))


def backfill_stream(
    seed: int,
    world: World,
    behaviour: Behaviour,
    dirty_rate: float,
    events: int,
    start_ms: int,
    end_ms: int,
    on_finished: Callable[[SessionRecord], None],
) -> Iterator[Row]:
    """Exactly `events` rows, all in [start, end), the same for the same arguments.

    Like a data interval: sessions still playing at `end` are cut there."""
    rate = backfill_rate(world, behaviour, seed, events, start_ms, end_ms)
    arrivals = BackfillArrivals(random.Random(f"{seed}/arrivals"), world, start_ms, end_ms, rate)
    stream = EventStream(seed, world, arrivals, behaviour, dirty_rate, on_finished, end_ms)
    return islice(iter(stream), events)
