"""Ctrl-C and SIGTERM handling shared by the long commands."""

from __future__ import annotations

import signal
import threading

import pytest

from agent_runtime.interrupts import StopRequest, raise_keyboard_interrupt, stop_signals


def test_first_signal_asks_to_stop_and_the_second_interrupts(capfd):
    request = StopRequest("training")
    assert request.exit_code() == 130  # no signal yet: the code of an interrupt
    request(signal.SIGTERM, None)
    assert request.event.is_set() and request.exit_code() == 143
    assert "SIGTERM: stopping training at the end of this step" in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        request(signal.SIGINT, None)


def test_handlers_are_installed_for_the_block_and_restored_after():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_signals(raise_keyboard_interrupt):
        assert signal.getsignal(signal.SIGINT) is raise_keyboard_interrupt
        assert signal.getsignal(signal.SIGTERM) is raise_keyboard_interrupt
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_nothing_changes():
    seen: list[object] = []

    def body() -> None:
        with stop_signals(raise_keyboard_interrupt):  # signal.signal would raise ValueError here
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(timeout=10)
    assert seen and seen[0] is not raise_keyboard_interrupt
