"""The answers to a finder's cache query: the windows a gateway holds, open or just released.

A released window is on its way through SQS to a turokd and not readable there yet, so
``RecentWindows`` keeps each released batch's groups for ``keep_seconds``
(``gateway_recent_seconds``) and answers with them and the open windows, aggregated as turokd
will aggregate them. Pure: the caller passes the clock and the open windows; no reactor.
"""
from __future__ import annotations

from typing import Callable, Sequence

from turok_core.windows.buffer import WindowGroup, window_points

# metric → step → [[slot, value], …] sorted by slot, as the cache-query protocol sends it
CachedPoints = dict[str, dict[int, list[list[float]]]]


class RecentWindows:
    """Released window groups kept ``keep_seconds`` to answer cache queries with the open ones."""

    def __init__(self, keep_seconds: float, clock: Callable[[], float],
                 open_groups: Callable[[], list[WindowGroup]]) -> None:
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._open_groups = open_groups
        # released windows still answered: (released at, groups), oldest first
        self.released: list[tuple[float, list[WindowGroup]]] = []

    def keep(self, groups: list[WindowGroup]) -> None:
        """Answer for ``groups``, released now, a while longer."""
        self.released.append((self._clock(), groups))
        self.forget()

    def forget(self) -> None:
        """Drop the released windows older than ``keep_seconds`` (turokd has them)."""
        horizon = self._clock() - self.keep_seconds
        released = self.released
        while released and released[0][0] < horizon:
            released.pop(0)

    def cached_points(self, metrics: Sequence[str], start: float, until: float) -> CachedPoints:
        """The cache query: ``metrics``' windows in ``[start, until)``, open or released less than
        ``keep_seconds`` ago (still on their way to a turokd), aggregated."""
        self.forget()
        found: dict[str, dict[int, dict[int, float]]] = {}
        for _released, groups in self.released:
            window_points(groups, metrics, start, until, found)
        window_points(self._open_groups(), metrics, start, until, found)  # newest last: it wins
        return {metric: {step: sorted(map(list, slots.items())) for step, slots in steps.items()}
                for metric, steps in found.items()}
