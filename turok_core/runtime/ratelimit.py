"""Rate limiting for repetitive log lines: one line per kind of event per interval."""
from __future__ import annotations

from typing import Callable


class Throttle:
    """``ready(kind)`` is true at most once per ``interval`` seconds for each kind of event;
    the refused calls are counted so the next line can say how many were not logged."""

    def __init__(self, clock: Callable[[], float], interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def ready(self, kind: str) -> bool:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        return True

    def suppressed(self, kind: str) -> int:
        """How many events of ``kind`` were refused since the last one let through (then reset)."""
        return self._suppressed.pop(kind, 0)
