"""Errors throttled per kind of problem, so a flood of one bad input cannot hide another."""
from __future__ import annotations

import time
from typing import Callable

MAX_MESSAGE_CHARS = 400


class ThrottledErrorLog:
    """Logs the first error of each kind, then at most one per ``period_sec``, with the number of
    occurrences suppressed in between (rclpy's own throttling is per call site, not per kind).

    Give it one severity only: rclpy refuses a call site (here, one line) that logs at two.
    """

    def __init__(self, log_error: Callable[[str], None], period_sec: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log_error = log_error
        self._period_sec = period_sec
        self._clock = clock
        self._last_report: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, kind: str, message: str) -> None:
        """Log ``message`` (cut to ``MAX_MESSAGE_CHARS``: it may quote message fields of any length)."""
        if len(message) > MAX_MESSAGE_CHARS:
            message = f'{message[:MAX_MESSAGE_CHARS]}... ({len(message)} characters)'
        now = self._clock()
        last = self._last_report.get(kind)
        if last is not None and now - last < self._period_sec:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f' ({suppressed} more like this in the last {now - last:.0f} s)'
        self._last_report[kind] = now
        self._log_error(message)
