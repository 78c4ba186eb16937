"""The journal of accepted points: what a crash must not lose before its windows are spooled.

``PointJournal`` keeps every chunk of points the gateway accepts (a ``POINTS`` record, written
before the points join their windows), and around each release of closed windows a ``RELEASE``
marker (written when the windows are taken) and a ``DONE`` marker (written once their bodies are
in the ``BodySpool``). A point is *delivered* when a DONE release positioned after it released
its window (``slot + step <= release time - grace``). On start-up the points not delivered go
back into the windows; a segment is deleted as soon as all its points are delivered. Replaying a
window's points gives the same message as before, and turokd sets a slot rather than adding to
it, so a replayed window that had been sent already is harmless. Framing, fsync policies and
rewrites: ``turok_core.spool.segments``. Pure library: no reactor; one thread owns a journal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import msgpack

from turok_core.spool.segments import DONE, POINTS, RELEASE, ScanStats, SegmentLog

Deadline = Callable[[str, int], Optional[int]]  # (metric, timestamp) -> slot + step, None: no schema


@dataclass
class _Segment:
    """What the journal knows about one of its segments."""
    newest_deadline: float = float("-inf")  # upper bound of slot + step over its points
    closed_at: Optional[float] = None  # when it stopped taking appends


@dataclass
class Recovered:
    """Points a journal gives back on start-up, and what reading it found."""
    names: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    delivered: int = 0  # points found already delivered (skipped)
    stats: ScanStats = field(default_factory=ScanStats)


class PointJournal:
    """Accepted points until the bodies of their windows are spooled (see the module notes).

    ``max_step`` is the longest base resolution of any schema: a segment whose newest point
    stamp plus ``max_step`` is at most a done release's time is wholly delivered."""

    def __init__(self, directory: Path | str, max_step: int, fsync: str = "interval",
                 segment_bytes: int = 8 << 20, rotate_seconds: float = 5.0) -> None:
        self.log = SegmentLog(directory, fsync, segment_bytes)
        self.max_step = max_step
        self.rotate_seconds = rotate_seconds
        self._segments: dict[int, _Segment] = {}
        self._opened_at = 0.0
        self._releases: dict[int, tuple[int, int, float]] = {}  # id -> (segment, offset, release time)
        self._done: list[tuple[int, int, float]] = []  # (segment, offset, release time) of done releases
        self._next_release = 1

    @property
    def total_bytes(self) -> int:
        return self.log.total_bytes

    @property
    def releasing(self) -> bool:
        """A release was begun and not ended."""
        return bool(self._releases)

    def recover(self, deadline: Deadline, now: float) -> Recovered:
        """Open the journal and return the points not delivered before the last stop or crash.

        They are rewritten into one BASE segment (and the old segments deleted), so the caller
        must put them back into its windows: they are journaled as accepted points again."""
        log = self.log
        log.open()
        result = Recovered()
        numbers = list(log.sizes)
        releases: dict[int, tuple[int, int, float]] = {}
        done: list[tuple[int, int, float]] = []
        for number in numbers:  # first pass: which releases completed, and where they were taken
            for offset, kind, payload in log.read(number, ScanStats()):
                if kind == RELEASE:
                    rid, when = msgpack.unpackb(payload)
                    releases[rid] = (number, offset, when)
                    # ids go on from the last run's, so a marker a crash left behind never
                    # meets a new one of the same id
                    self._next_release = max(self._next_release, rid + 1)
                elif kind == DONE:
                    rid = msgpack.unpackb(payload)
                    if rid in releases:
                        done.append(releases[rid])
        records = self._undelivered(numbers, done, deadline, result)
        log.replace(numbers, records)
        if records:
            self._segments[numbers[-1]] = _Segment(self._bound(result.timestamps), now)
        self._opened_at = now
        return result

    def _undelivered(self, numbers: Sequence[int], done: Sequence[tuple[int, int, float]],
                     deadline: Deadline, result: Recovered) -> list[tuple[int, bytes]]:
        """POINTS records of the points in ``numbers`` no done release (after them) covered;
        the points are also appended to ``result``'s lists."""
        done = sorted(done)
        # latest[i]: the newest release time among done[i:], the releases after a position
        latest = [float("-inf")] * (len(done) + 1)
        for i in range(len(done) - 1, -1, -1):
            latest[i] = max(done[i][2], latest[i + 1])
        records: list[tuple[int, bytes]] = []
        cursor = 0
        for number in numbers:
            for offset, kind, payload in self.log.read(number, result.stats):
                if kind != POINTS:
                    continue
                while cursor < len(done) and done[cursor][:2] < (number, offset):
                    cursor += 1
                released_until = latest[cursor]
                names, values, stamps = msgpack.unpackb(payload)
                keep = []
                for i, (name, stamp) in enumerate(zip(names, stamps)):
                    due = deadline(name, stamp)
                    if due is not None and due > released_until:
                        keep.append(i)
                    else:
                        result.delivered += 1
                if not keep:
                    continue
                if len(keep) < len(names):
                    names = [names[i] for i in keep]
                    values = [values[i] for i in keep]
                    stamps = [stamps[i] for i in keep]
                result.names.extend(names)
                result.values.extend(values)
                result.timestamps.extend(stamps)
                records.append((POINTS, msgpack.packb([names, values, stamps])))
        return records

    def _bound(self, timestamps: Sequence[int], max_step: Optional[int] = None) -> float:
        if not timestamps:
            return float("-inf")
        return max(timestamps) + (self.max_step if max_step is None else max_step)

    def add(self, names: Sequence[str], values: Sequence[float], timestamps: Sequence[int],
            max_step: Optional[int] = None) -> None:
        """Journal a chunk of accepted points (before they join their windows).

        ``max_step``, when the caller knows it, is the longest step of these points' metrics
        (default: the journal's): their windows close by the newest stamp plus it."""
        if not names:
            return
        payload = msgpack.packb([names, values, timestamps])
        number, _ = self.log.append([(POINTS, payload)])
        segment = self._segments.get(number)
        if segment is None:
            segment = self._segments[number] = _Segment()
        segment.newest_deadline = max(segment.newest_deadline, self._bound(timestamps, max_step))

    def begin_release(self, released_until: float, now: float) -> int:
        """Mark that windows with ``slot + step <= released_until`` are being taken; returns the
        release's id for ``end_release``. Starts a new segment first when the current one is
        full or old, so earlier segments can go once the release is done."""
        log = self.log
        if log.current is not None and (log.sizes[log.current] >= log.segment_bytes
                                        or now - self._opened_at >= self.rotate_seconds):
            self._segments.setdefault(log.current, _Segment()).closed_at = now
            log.rotate()
        if log.current is None:
            self._opened_at = now
        rid = self._next_release
        self._next_release += 1
        number, (offset,) = log.append([(RELEASE, msgpack.packb([rid, released_until]))])
        self._releases[rid] = (number, offset, released_until)
        return rid

    def end_release(self, rid: int) -> list[int]:
        """Mark release ``rid`` done (its bodies are spooled); delete the segments it completes.
        Returns the deleted segment numbers."""
        position = self._releases.pop(rid)
        self.log.append([(DONE, msgpack.packb(rid))])
        self._done.append(position)
        number, _offset, released_until = position
        finished = [n for n in self.log.sizes if n < number and n != self.log.current
                    and self._segments.get(n, _Segment()).newest_deadline <= released_until]
        self._forget(finished)
        self.log.delete(finished)
        return finished

    def compact(self, now: float, older_than: float, deadline: Deadline) -> int:
        """Rewrite the closed segments closed before ``now - older_than`` that still hold
        undelivered points (far-future stamps, late points) into one; returns points kept.

        Call only between releases (none begun and not ended)."""
        log = self.log
        due = [n for n, segment in self._segments.items() if n != log.current
               and segment.closed_at is not None and segment.closed_at <= now - older_than]
        if not due or self._releases:
            return 0
        old = [n for n in log.sizes if n <= max(due)]  # a BASE supersedes a contiguous range
        result = Recovered()
        records = self._undelivered(old, self._done, deadline, result)
        kept = log.replace(old, records)
        self._forget(old)
        if kept is not None:
            self._segments[kept] = _Segment(self._bound(result.timestamps), now)
        newest = old[-1]
        self._done = [d for d in self._done if d[0] > newest]
        return len(result.names)

    def clear(self) -> None:
        """Delete every segment: the caller knows every journaled point is delivered (no open
        window, no release under way), so a paused, idle gateway does not keep a full journal."""
        if self._releases:
            raise ValueError("a release is under way")
        self.log.rotate()
        self.log.delete(list(self.log.sizes))
        self._segments.clear()
        self._done.clear()

    def _forget(self, numbers: Sequence[int]) -> None:
        for number in numbers:
            self._segments.pop(number, None)
        if numbers:
            oldest = min(self.log.sizes, default=None)
            self._done = [d for d in self._done if oldest is None or d[0] >= oldest]

    def sync(self) -> None:
        self.log.sync()

    def close(self) -> None:
        self.log.close()
