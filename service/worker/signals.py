"""SIGTERM and SIGINT as a flag: the worker finishes its step, writes what is done and exits.

The handler only sets an event; the training loop's ``should_stop`` reads it between steps and
the idle loop waits on it, so a signal never interrupts a database write half-way.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """Set once when the process is asked to stop; cheap to read from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, reason: str = "stop requested") -> None:
        """Ask the worker to stop (``reason`` is logged)."""
        if self.signal_name is None:
            self.signal_name = reason
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early when a stop is asked; return is_set()."""
        return self._event.wait(timeout)


def install_stop_handlers(flag: StopFlag) -> None:
    """Route SIGTERM and SIGINT to ``flag`` (call from the main thread)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        flag.set(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)


__all__ = ["STOP_SIGNALS", "StopFlag", "install_stop_handlers"]
