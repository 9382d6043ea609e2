"""How one person watches one film: the viewing-session state machine.

    start -> playing --heartbeat every `heartbeat_ms` of playback--> playing
    playing --pause--> paused --resume--> playing
    playing --seek (forward or back)--> playing
    playing|paused --stop--> ended          (explicit stop, or the end of the film)
    playing|paused --(nothing more)--> ended (abandoned: the app was closed or died)

Time is in integer milliseconds. The position advances exactly with playback time,
never passes the runtime, and is unchanged while paused. Every event is at least a
second after the previous one, so ordering a session by event time is unambiguous.
The session also keeps the truth that the marts must reproduce: watched time counts
only playing intervals, up to the last event the player sent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from producer.catalog import Movie

START, HEARTBEAT, PAUSE, RESUME, SEEK, STOP = "start", "heartbeat", "pause", "resume", "seek", "stop"
EVENT_TYPES = (START, HEARTBEAT, PAUSE, RESUME, SEEK, STOP)
QUIT = "quit"  # an internal decision, never an event type
MIN_GAP_MS = 1_000
COMPLETED_AT = 0.9


@dataclass(frozen=True)
class Behaviour:
    heartbeat_ms: int = 30_000
    pauses_per_hour: float = 1.7
    seeks_per_hour: float = 1.2
    # Chance per hour of playback of walking away, by how far into the film:
    # sampling the opening, the long middle, the last act.
    quit_per_hour_opening: float = 0.75
    quit_per_hour_middle: float = 0.12
    quit_per_hour_last_act: float = 0.2
    # Of those who walk away, how many press stop; the rest just close the app.
    explicit_stop_share: float = 0.65
    # Chance that a pause is the end of the session.
    leave_while_paused: float = 0.08
    # Chance of continuing a film started earlier instead of from the beginning.
    continue_watching: float = 0.15
    # Chance of watching the end credits through instead of stopping when they begin.
    watch_credits: float = 0.2


class SessionEvent(NamedTuple):
    event_type: str
    position_ms: int
    time_ms: int


@dataclass(frozen=True)
class SessionTruth:
    """What really happened in a session, in the units of the marts."""

    watched_ms: int
    max_position_ms: int
    pauses: int
    seeks: int
    events: int
    started_ms: int
    ended_ms: int
    stopped: bool
    runtime_ms: int

    @property
    def completion(self) -> float:
        return min(1.0, self.max_position_ms / self.runtime_ms)

    @property
    def completed(self) -> bool:
        return self.completion >= COMPLETED_AT

    @property
    def end_reason(self) -> str:
        return "stopped" if self.stopped else "abandoned"


class Session:
    """One viewing session, advanced one event at a time (cheap enough to keep tens of
    thousands alive at once in live mode)."""

    __slots__ = (
        "_credits_ms",
        "_ended",
        "_pause_chance",
        "_pauses",
        "_playing",
        "_quit_chances",
        "_rng",
        "_runtime_ms",
        "_seek_chance",
        "_seeks",
        "_started_ms",
        "_step_ms",
        "_stopped",
        "_watched_ms",
        "behaviour",
        "events",
        "max_position_ms",
        "movie",
        "position_ms",
        "time_ms",
    )

    def __init__(self, rng: random.Random, movie: Movie, start_ms: int, behaviour: Behaviour) -> None:
        self._rng = rng
        self.movie = movie
        self.behaviour = behaviour
        runtime = movie.runtime_ms
        self._runtime_ms = runtime
        # Chances per heartbeat interval of playback, worked out once: the hot path only draws.
        self._step_ms = behaviour.heartbeat_ms
        hours = behaviour.heartbeat_ms / 3_600_000
        self._pause_chance = behaviour.pauses_per_hour * hours
        self._seek_chance = behaviour.seeks_per_hour * hours
        # Walking away: in the opening tenth, the long middle, the last act (scaled by appeal).
        self._quit_chances = tuple(
            rate / movie.appeal * hours
            for rate in (
                behaviour.quit_per_hour_opening,
                behaviour.quit_per_hour_middle,
                behaviour.quit_per_hour_last_act,
            )
        )
        credits = int(runtime * rng.uniform(0.03, 0.07))
        self._credits_ms = runtime if rng.random() < behaviour.watch_credits else runtime - credits
        if rng.random() < behaviour.continue_watching:
            self.position_ms = int(runtime * rng.uniform(0.05, 0.6)) // 1000 * 1000
        else:
            self.position_ms = 0
        self.time_ms = start_ms
        self._started_ms = start_ms
        self.max_position_ms = self.position_ms
        self._watched_ms = 0
        self._pauses = 0
        self._seeks = 0
        self._playing = False
        self._ended = False
        self._stopped = False
        self.events = 0

    def next_event(self) -> SessionEvent | None:
        """The next event, or None once the session is over."""
        event_type = self.advance()
        return None if event_type is None else SessionEvent(event_type, self.position_ms, self.time_ms)

    def advance(self) -> str | None:
        """Move on to the next event and return its type; its position and time are then the
        session's `position_ms` and `time_ms` (until it advances again). None once the session
        is over. The event stream's way: no object per event on its hot path."""
        if self._ended:
            return None
        if self.events == 0:
            self._playing = True
            return self._emit(START, 0)
        return self._while_playing() if self._playing else self._while_paused()

    def truth(self) -> SessionTruth:
        return SessionTruth(
            watched_ms=self._watched_ms,
            max_position_ms=self.max_position_ms,
            pauses=self._pauses,
            seeks=self._seeks,
            events=self.events,
            started_ms=self._started_ms,
            ended_ms=self.time_ms,
            stopped=self._stopped,
            runtime_ms=self.movie.runtime_ms,
        )

    def _emit(self, event_type: str, elapsed_ms: int) -> str:
        self.time_ms += elapsed_ms
        self.events += 1
        self.max_position_ms = max(self.max_position_ms, self.position_ms)
        return event_type

    def _quit_chance(self) -> float:
        progress = self.position_ms / self._runtime_ms
        opening, middle, last_act = self._quit_chances
        return opening if progress < 0.1 else middle if progress < 0.8 else last_act

    def _earlier(self, earliest: tuple[int, str] | None, action: str) -> tuple[int, str]:
        """`action` at a random moment of this heartbeat interval, if before `earliest` (the
        first one drawn wins a tie)."""
        candidate = (self._rng.randrange(MIN_GAP_MS, self._step_ms - MIN_GAP_MS), action)
        return candidate if earliest is None or candidate < earliest else earliest

    def _while_playing(self) -> str | None:
        rng = self._rng
        step = self._step_ms
        runtime = self._runtime_ms
        # Where playback would end: when the credits start, or at the very end for
        # those who stay (or who already seeked past the credits).
        end_at = self._credits_ms if self.position_ms < self._credits_ms else runtime
        # The earliest of the things that may happen within this heartbeat interval, drawn
        # in a fixed order; none of them: the next heartbeat. (Unrolled: the common case,
        # nothing happens, then builds no tuple.)
        earliest = (max(MIN_GAP_MS, end_at - self.position_ms), STOP) if end_at - self.position_ms <= step else None
        if rng.random() < self._pause_chance:
            earliest = self._earlier(earliest, PAUSE)
        if rng.random() < self._seek_chance:
            earliest = self._earlier(earliest, SEEK)
        if rng.random() < self._quit_chance():
            earliest = self._earlier(earliest, QUIT)
        elapsed, action = earliest or (step, HEARTBEAT)
        behaviour = self.behaviour
        if action == QUIT:
            if rng.random() >= behaviour.explicit_stop_share:
                # The app was closed: nothing more arrives, the session ends at its last event.
                self._ended = True
                return None
            action = STOP
        self._watched_ms += elapsed
        # The player holds the position at the end of the film.
        self.position_ms = min(runtime, self.position_ms + elapsed)
        if action == STOP:
            self._ended, self._stopped = True, True
        elif action == PAUSE:
            self._playing = False
            self._pauses += 1
        elif action == SEEK:
            self._seeks += 1
            jump = rng.randrange(30_000, 480_000) if rng.random() < 0.6 else -rng.randrange(10_000, 180_000)
            self.position_ms = max(0, min(runtime - MIN_GAP_MS, self.position_ms + jump))
        return self._emit(action, elapsed)

    def _while_paused(self) -> str | None:
        rng = self._rng
        # Pauses are mostly short (a drink, a phone call), sometimes long (dinner).
        duration = max(MIN_GAP_MS, min(int(rng.lognormvariate(11.4, 1.1)), 4 * 3_600_000))
        if rng.random() < self.behaviour.leave_while_paused:
            if rng.random() < 0.5:
                self._ended = True
                return None
            self._ended, self._stopped = True, True
            return self._emit(STOP, duration)
        self._playing = True
        return self._emit(RESUME, duration)
