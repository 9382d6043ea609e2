"""How far behind the loader is, and whether it is stalled: the bookkeeping each poll does.

Kept apart from the batch protocol (loader/protocol.py): none of it decides what is
loaded. The lag is the rows not loaded yet, in two parts: those below the cuttable xmin
(known from the ledger, or counted now and then while the backlog is larger than the
ledger holds) and those committed at or above it, not loadable yet. Loading is stalled
while xmin stays put with committed rows waiting behind it for LOADER_STALL_SECONDS.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cinema import db
from loader import source
from loader.metrics import Metrics

log = logging.getLogger("loader")

# While the backlog is larger than the ledger holds, the lag in rows is counted this often
# (a count costs about as much as scanning the backlog once).
LAG_COUNT_SECONDS = 30.0
# Rows committed at or above xmin (not loadable yet) are counted this often: normally a
# few, all of them behind a transaction held open.
ABOVE_XMIN_COUNT_SECONDS = 1.0


@dataclass
class Stall:
    """How long the cuttable xmin has stayed put with committed rows waiting behind it."""

    seconds: float = 0.0
    blocker: source.Blocker | None = None

    def describe(self) -> str:
        holder = self.blocker.describe() if self.blocker else "a transaction this role cannot see"
        return (
            f"the subscriber's xmin has not moved for {self.seconds:.0f}s with committed rows waiting behind it, "
            f"held by {holder}"
        )


class Lag:
    """The lag and the stall as of the last poll, published to the metrics."""

    def __init__(self, metrics: Metrics, stall_seconds: float) -> None:
        self._metrics = metrics
        self._stall_seconds = stall_seconds
        self._complete_as_of: float | None = None
        self._below_xmin = 0
        self._below_counted_at = 0.0
        self._above_xmin = 0
        self._above_counted_at = 0.0
        self._pinned_xmin = 0
        self._pinned_since = time.monotonic()
        self._stall_logged_at = 0.0
        self.stall = Stall()

    def note(
        self,
        connection: db.Connection,
        *,
        watermark: int,
        xmin: int,
        taken_at: float | None,
        complete: bool,
        pending: int | None,
    ) -> None:
        """Record the lag: the rows below xmin not yet loaded (`pending` None: unknown
        without a count, the backlog exceeds the ledger) plus those committed at or above
        it, not yet loadable; and whether xmin is pinned. `complete`: everything below the
        xmin of the snapshot taken at `taken_at` is loaded."""
        now = time.monotonic()
        if complete and taken_at is not None:
            self._complete_as_of = taken_at
        if pending is not None:
            self._below_xmin = pending
        elif now - self._below_counted_at > LAG_COUNT_SECONDS:
            self._below_xmin = source.pending_rows(connection, watermark, xmin)
            self._below_counted_at = now
        if now - self._above_counted_at > ABOVE_XMIN_COUNT_SECONDS:
            self._above_xmin = source.pending_rows(connection, xmin)
            self._above_counted_at = now
        self._note_stall(connection, xmin, now)
        self._metrics.progress(watermark, self.rows(), self._complete_as_of)
        blocker = self.stall.blocker
        self._metrics.stalled(self.stall.seconds, blocker.pid if blocker else None, self.stall.describe())

    def _note_stall(self, connection: db.Connection, xmin: int, now: float) -> None:
        if xmin > self._pinned_xmin or not self._above_xmin:
            self._pinned_xmin = xmin
            self._pinned_since = now
        pinned = now - self._pinned_since
        if pinned < self._stall_seconds:
            self.stall = Stall()
            return
        if self.stall.seconds == 0.0 or now - self._stall_logged_at >= self._stall_seconds:
            self.stall = Stall(pinned, source.oldest_open_transaction(connection))
            blocker = self.stall.blocker
            log.warning(
                "loading is stalled: %s",
                self.stall.describe(),
                extra={
                    "blocking_pid": blocker.pid if blocker else None,
                    "application": blocker.application if blocker else None,
                    "state": blocker.state if blocker else None,
                    "transaction_seconds": round(blocker.seconds) if blocker else None,
                },
            )
            self._stall_logged_at = now
        else:
            self.stall = Stall(pinned, self.stall.blocker)

    def seconds(self) -> float | None:
        """Since the last moment everything committed was loaded; None before the first."""
        if self._complete_as_of is None:
            return None
        return max(0.0, time.time() - self._complete_as_of)

    def rows(self) -> int:
        return self._below_xmin + self._above_xmin
