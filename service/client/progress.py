"""One progress line on a stream, for the terminal client's ``jobs submit --wait`` and the
demo: rewritten in place on a terminal, plain lines for a log or a pipe."""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from typing import TextIO


class ProgressLine:
    """Progress on ``stream``: on a terminal one line rewritten in place (``\\r``); otherwise
    a plain line whenever the state changes, at most one every ``plain_interval_s`` seconds
    (the last is always written by :meth:`done`).

    The state is the text shown unless :meth:`update` is given a ``key``: a job's progress
    passes (status, epoch), so a log gets a line an epoch rather than one a step.
    """

    def __init__(self, stream: TextIO, *, plain_interval_s: float = 2.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.plain_interval_s = plain_interval_s
        self._text = ""
        self._key: Hashable = None
        self._pending = False  # something shown since the last done()
        self._written_key: Hashable = None
        self._written_at = -math.inf
        self._width = 0

    def update(self, text: str, *, key: Hashable = None) -> None:
        """Show ``text`` as the current state (``key``: what counts as a change, default
        the text)."""
        self._text, self._key, self._pending = text, text if key is None else key, True
        if self.tty:
            self._rewrite(text)
            return
        now = time.monotonic()
        if self._key != self._written_key and now - self._written_at >= self.plain_interval_s:
            self._write_plain(now)

    def done(self, text: str | None = None) -> None:
        """Finish the line with ``text``, or with the last state shown if there is one since
        the previous :meth:`done`; a fresh line follows."""
        if text is not None:
            self._text, self._key, self._pending = text, text, True
        if not self._pending:
            return
        if self.tty:
            self._rewrite(self._text)
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
        elif self._text and self._key != self._written_key:
            self._write_plain(time.monotonic())
        self._pending = False

    def _rewrite(self, text: str) -> None:
        padding = " " * max(0, self._width - len(text))
        self.stream.write(f"\r{text}{padding}")
        self._width = len(text)
        self.stream.flush()

    def _write_plain(self, now: float) -> None:
        self.stream.write(self._text + "\n")
        self.stream.flush()
        self._written_key, self._written_at = self._key, now


__all__ = ["ProgressLine"]
