"""Stopping on signals: the first asks, the second insists, and the old handlers come back."""

from __future__ import annotations

import os
import signal

import pytest

from cinema.signals import stop_on_signals


def test_the_first_signal_sets_the_event_and_is_reported_outside_the_handler(capfd):
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals("finishing the current batch") as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert "SIGTERM: finishing the current batch (send it again to stop at once)" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def _signal_twice() -> None:
    with stop_on_signals("finishing the current batch") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5)
        # Python runs the handler right after os.kill returns, before the next line.
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second SIGINT did not stop the program")


def test_a_second_signal_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _signal_twice()
    assert signal.getsignal(signal.SIGINT) is before


def test_without_a_signal_nothing_is_reported_and_the_handlers_are_restored(capfd):
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    with stop_on_signals("finishing the current batch") as stop:
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert not stop.is_set()
    assert capfd.readouterr().err == ""
    assert {number: signal.getsignal(number) for number in before} == before
