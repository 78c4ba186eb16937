"""The per-metric reader graphite-web's LeafNode calls, and whisper's time-window rule.

A fetch answers from the archive whisper would pick (the finest whose retention covers
``now - from``, else the coarsest), read from that resolution's day tables and aligned exactly as
whisper aligns a read: graphite users and functions see the same timestamps, steps and point
counts they saw with carbon.

As in graphite-web, a reader holds a data handle, never the finder: ``TurokReader`` is given a
fetch function (``FetchPaths``, the finder's ``fetch_paths``), a clock and a lookup of the
metric's longest retention when it is made (``TurokFinder.reader``).
"""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple, Optional, Sequence

from graphite.intervals import Interval, IntervalSet

from turok_core.model.schemas import Archive


class Window(NamedTuple):
    """Slots ``start``, ``start + step`` … ``< end``: ``(end - start) // step`` values."""
    start: int
    end: int
    step: int


def whisper_window(start_time: float, end_time: Optional[float], now: float, step: int,
                   retention: int) -> Optional[Window]:
    """The slots whisper would return for a read of ``[start_time, end_time]`` at ``now``.

    ``None`` when the range is entirely in the future or beyond the retention (or inverted).
    The range is clipped to ``[now - retention, now]``; each bound is moved to the start of the
    slot after the one holding it; an empty window still yields the next slot.
    """
    now = int(now)
    until = now if end_time is None else int(end_time)
    start = int(start_time)
    if start > until:
        return None
    oldest = now - retention
    if start > now or until < oldest:
        return None
    start = max(start, oldest)
    until = min(until, now)
    first = start - start % step + step
    last = until - until % step + step
    if first == last:
        last += step
    return Window(first, last, step)


def archive_window(start_time: float, end_time: Optional[float], now: float,
                   archives: Sequence[Archive]) -> Optional[Window]:
    """whisper's read of ``[start_time, end_time]`` at ``now`` over a metric's ``archives``.

    The range is clipped to ``[now - longest retention, now]``; the answering archive is the first
    (finest) whose retention covers ``now - start`` after that clipping, which is always one.
    """
    longest = max(archive.retention for archive in archives)
    start = max(int(start_time), int(now) - longest)
    for archive in archives:
        if archive.retention >= int(now) - start:
            break
    return whisper_window(start_time, end_time, now, archive.step, longest)


# (paths, start_time, end_time, now) -> {path: ((start, end, step), values)}, paths outside
# their retention left out: what TurokFinder.fetch_paths answers
FetchPaths = Callable[[Iterable[str], float, Optional[float], Optional[float]], dict]


class TurokReader:
    """graphite-web reader for one Turok metric, reading through the fetch function it is given."""

    __slots__ = ("path", "_fetch", "_clock", "_retention_of")

    def __init__(self, path: str, fetch: FetchPaths, clock: Callable[[], float],
                 retention_of: Callable[[str], int]) -> None:
        """``retention_of(path)``: the metric's longest retention in seconds, looked up only when
        graphite-web asks for intervals (rarely: when two finders answer one path), not for each
        leaf a find makes."""
        self.path = path
        self._fetch = fetch
        self._clock = clock
        self._retention_of = retention_of

    def fetch(self, startTime: float, endTime: Optional[float], now: Optional[float] = None,
              requestContext=None):
        """``((start, end, step), values)`` like whisper, or ``None`` outside the retention."""
        return self._fetch([self.path], startTime, endTime, now).get(self.path)

    def get_intervals(self, now: Optional[float] = None) -> IntervalSet:
        """The time this metric can answer for: its longest retention up to now."""
        now = self._clock() if now is None else now
        return IntervalSet([Interval(now - self._retention_of(self.path), now)])

    def __repr__(self) -> str:
        return f"<TurokReader {self.path}>"
