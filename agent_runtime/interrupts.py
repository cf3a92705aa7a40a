"""Ctrl-C and SIGTERM for long commands: stop at a safe point, and say how to go on.

A training run stopped in the middle of an update or of a replay write would leave a checkpoint that
misleads; a user pressing Ctrl-C wants the work so far kept. So the first SIGINT or SIGTERM only asks
the job to stop at its next safe point (it saves there); a second one interrupts at once, and the job
then resumes from its last periodic checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

Handler = Callable[[int, FrameType | None], None]


@contextmanager
def stop_signals(handler: Handler) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` while the block runs, then restore the previous handlers.

    Signal handlers belong to the main thread: called from any other thread this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def raise_keyboard_interrupt(signum: int, _frame: FrameType | None) -> None:
    """A handler that makes SIGTERM unwind like Ctrl-C, so ``finally`` blocks run."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


class StopRequest:
    """A signal handler: the first signal sets :attr:`event`, a second raises ``KeyboardInterrupt``.

    Args:
        what: what stops, for the message written on the first signal ("training").
    """

    def __init__(self, what: str) -> None:
        self.event = threading.Event()
        self.what = what
        self.signum: int | None = None
        """The first signal received, if any."""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        """Handle one SIGINT or SIGTERM."""
        if self.event.is_set():
            raise_keyboard_interrupt(signum, frame)
        self.signum = signum
        self.event.set()
        message = (
            f"\n{signal.Signals(signum).name}: stopping {self.what} at the end of this step and saving a checkpoint; "
            "send it again to stop at once (the run then resumes from its last periodic checkpoint)\n"
        )
        # os.write, not print: the handler may run while the main thread is inside a write to stderr
        # (logging, the progress bar), and a buffered writer refuses to be re-entered.
        os.write(sys.stderr.fileno(), message.encode())

    def exit_code(self) -> int:
        """The shell's code for the signal received (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)
