"""Stopping on SIGTERM (docker stop) and SIGINT (Ctrl-C), in the manner of dlt's signals.

The first signal only sets an event, which every wait of the stopped loop watches, and
is reported by a thread: a handler that writes can interrupt the very write it repeats.
A second signal stops at once. On exit the handlers that were there before are back.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(doing: str) -> Iterator[threading.Event]:
    """An event the first SIGTERM or SIGINT sets, reported as `SIGTERM: <doing>`; the second
    raises KeyboardInterrupt where the program is. Call from the main thread."""
    stop = threading.Event()
    received: list[signal.Signals] = []
    over = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum))
        stop.set()
        over.set()

    def report() -> None:
        over.wait()
        if received:
            click.echo(f"{received[0].name}: {doing} (send it again to stop at once)", err=True)

    reporter = threading.Thread(target=report, name="signal-report", daemon=True)
    reporter.start()
    previous = {number: signal.signal(number, handle) for number in SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        over.set()
        reporter.join()
