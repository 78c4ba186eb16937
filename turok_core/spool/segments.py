"""The gateway's write-ahead spool: accepted points and unsent SQS bodies on local disk.

Two append-only logs of numbered segment files, each in its own directory:

- ``PointJournal``: every chunk of points the gateway accepts (a ``POINTS`` record, written before
  the points join their windows), and around each release of closed windows a ``RELEASE``
  marker (written when the windows are taken) and a ``DONE`` marker (written once their
  bodies are in the ``BodySpool``). A point is *delivered* when a DONE release positioned after
  it released its window (``slot + step <= release time - grace``). On start-up the points not
  delivered go back into the windows; a segment is deleted as soon as all its points are
  delivered. Replaying a window's points gives the same message as before, and turokd sets a
  slot rather than adding to it, so a replayed window that had been sent already is harmless.
- ``BodySpool``: encoded SQS bodies (``BODY`` records), acknowledged by ``ACK`` records once
  SendMessageBatch took them. Unacknowledged bodies are sent again after a restart; a segment is
  deleted when all its bodies are acknowledged.

Each record is framed ``magic(2) kind(1) pad(1) length(4) crc32(4)`` + payload, the CRC over kind and
payload. A torn tail (crash mid-write) or a damaged region fails the length or checksum test;
reading skips to the next valid frame and counts what it skipped, so start-up never fails on it.
Writes are plain ``os.write`` calls: once ``append`` returns, the record survives the death of
the process (SIGKILL); surviving an OS crash or power loss depends on the fsync policy:
``always`` (fdatasync every append), ``interval`` (``sync()`` when the owner calls it, the gateway
every ``spool_fsync_interval_seconds``) or ``never`` (the kernel's writeback).

Rewrites (start-up recovery, compaction) write the surviving records to a temporary file whose
first record is ``BASE(first)``, then rename it over the newest segment they replace: a segment
starting with ``BASE(first)`` supersedes segments ``first`` up to itself, so a crash between the
rename and the deletes never counts a point twice. Pure library: no reactor; one thread owns a
log, except ``BodySpool.load`` (reads only) which may run in another.
"""
from __future__ import annotations

import fcntl
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import msgpack

MAGIC = b"\xa7\x54"
HEADER = struct.Struct(">2sBxII")  # magic, kind, pad, payload length, crc32(kind + payload)
MAX_PAYLOAD = 64 * 1024 * 1024  # a longer length field is damage, not a record
SUFFIX = ".seg"
FSYNC_POLICIES = ("always", "interval", "never")

# record kinds
BASE, POINTS, RELEASE, DONE, BODY, ACK = 1, 2, 3, 4, 5, 6

Deadline = Callable[[str, int], Optional[int]]  # (metric, timestamp) -> slot + step, None: no schema


class SpoolError(RuntimeError):
    """The spool cannot be used (directory locked by another process, bad policy)."""


def frame(kind: int, payload: bytes) -> bytes:
    """One framed record."""
    crc = zlib.crc32(payload, zlib.crc32(bytes((kind,))))
    return HEADER.pack(MAGIC, kind, len(payload), crc) + payload


@dataclass
class ScanStats:
    """What reading segments found: good records, damaged regions skipped and their bytes."""
    records: int = 0
    damaged: int = 0
    skipped_bytes: int = 0

    def add(self, other: "ScanStats") -> None:
        self.records += other.records
        self.damaged += other.damaged
        self.skipped_bytes += other.skipped_bytes


def _valid_at(data: bytes, pos: int) -> Optional[tuple[int, int, int]]:
    """(kind, payload start, payload end) when a whole, intact record starts at ``pos``."""
    if pos + HEADER.size > len(data):
        return None
    magic, kind, length, crc = HEADER.unpack_from(data, pos)
    start, end = pos + HEADER.size, pos + HEADER.size + length
    if magic != MAGIC or length > MAX_PAYLOAD or end > len(data):
        return None
    if zlib.crc32(memoryview(data)[start:end], zlib.crc32(bytes((kind,)))) != crc:
        return None
    return kind, start, end


def scan(data: bytes, stats: ScanStats) -> Iterator[tuple[int, int, bytes]]:
    """(offset, kind, payload) of every intact record of a segment's bytes, in order.

    A damaged region (torn tail, flipped bits) is skipped up to the next intact frame."""
    pos, size = 0, len(data)
    while pos < size:
        found = _valid_at(data, pos)
        if found is None:
            start = pos
            pos = data.find(MAGIC, pos + 1)
            while pos != -1 and _valid_at(data, pos) is None:
                pos = data.find(MAGIC, pos + 1)
            if pos == -1:
                pos = size
            stats.damaged += 1
            stats.skipped_bytes += pos - start
            continue
        kind, start, end = found
        stats.records += 1
        yield pos, kind, data[start:end]
        pos = end


class SegmentLog:
    """Numbered segment files of framed records in one directory, locked for one process."""

    def __init__(self, directory: Path | str, fsync: str = "interval", segment_bytes: int = 8 << 20) -> None:
        if fsync not in FSYNC_POLICIES:
            raise SpoolError(f"spool_fsync = {fsync!r}: expected one of {', '.join(FSYNC_POLICIES)}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.sizes: dict[int, int] = {}  # segment number -> bytes, oldest first
        self.current: Optional[int] = None  # segment open for appends
        self._fd: Optional[int] = None
        self._lock_fd: Optional[int] = None
        self._next = 1
        self._dirty = self._dir_dirty = False
        self.superseded_deleted = 0

    # --- opening ------------------------------------------------------------------------------
    def open(self) -> None:
        """Create and lock the directory, list its segments, drop segments a BASE superseded."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolError(f"spool directory {self.directory} is in use by another process") from None
        for stale in self.directory.glob("*.tmp"):
            stale.unlink()
        numbers = sorted(int(p.stem) for p in self.directory.glob("*" + SUFFIX) if p.stem.isdigit())
        superseded: set[int] = set()
        for number in numbers:
            first = self._base_of(number)
            if first is not None:
                superseded.update(n for n in numbers if first <= n < number)
        for number in numbers:
            if number in superseded:
                self._path(number).unlink()
                self.superseded_deleted += 1
            else:
                self.sizes[number] = self._path(number).stat().st_size
        self._next = (numbers[-1] + 1) if numbers else 1

    def _base_of(self, number: int) -> Optional[int]:
        with open(self._path(number), "rb") as f:
            head = f.read(HEADER.size + 16)
        found = _valid_at(head, 0)
        if found is None or found[0] != BASE:
            return None
        return msgpack.unpackb(head[found[1]:found[2]])

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:016d}{SUFFIX}"

    def read(self, number: int, stats: ScanStats) -> Iterator[tuple[int, int, bytes]]:
        """(offset, kind, payload) of segment ``number``'s intact records."""
        with open(self._path(number), "rb") as f:
            data = f.read()
        yield from scan(data, stats)

    def read_at(self, number: int, offset: int) -> bytes:
        """The payload of the record at ``offset`` of segment ``number`` (any thread)."""
        with open(self._path(number), "rb") as f:
            f.seek(offset)
            head = f.read(HEADER.size)
            _magic, _kind, length, _crc = HEADER.unpack(head)
            data = head + f.read(length)
        found = _valid_at(data, 0)
        if found is None:
            raise SpoolError(f"damaged record at {self._path(number)}:{offset}")
        return data[found[1]:found[2]]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    # --- writing ------------------------------------------------------------------------------
    def append(self, records: Sequence[tuple[int, bytes]]) -> tuple[int, list[int]]:
        """Append records in one write: (segment number, offset of each record)."""
        if self._fd is None:
            self._start_segment()
        number = self.current
        offset = self.sizes[number]
        offsets, chunks = [], []
        for kind, payload in records:
            chunk = frame(kind, payload)
            offsets.append(offset)
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
        written = 0
        while written < len(data):  # a regular file takes it all at once unless the disk is full
            written += os.write(self._fd, data[written:])
        self.sizes[number] = offset
        self._dirty = True
        if self.fsync == "always":
            self.sync()
        return number, offsets

    def _start_segment(self) -> None:
        number = self._next
        self._next += 1
        self._fd = os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.current = number
        self.sizes[number] = 0
        self._dir_dirty = True

    def rotate(self) -> None:
        """Close the current segment; the next append starts a new one."""
        if self._fd is not None:
            if self._dirty and self.fsync != "never":
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._dirty = False
            self.current = None

    def sync(self) -> None:
        """Make what was appended (and created or deleted) durable."""
        if self._dirty and self._fd is not None:
            os.fdatasync(self._fd)
        self._dirty = False
        if self._dir_dirty:
            self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._dir_dirty = False

    def delete(self, numbers: Sequence[int]) -> None:
        """Delete closed segments."""
        for number in numbers:
            if number == self.current:
                raise ValueError("cannot delete the segment open for appends")
            self._path(number).unlink(missing_ok=True)
            self.sizes.pop(number, None)
            self._dir_dirty = True
        if self.fsync == "always" and numbers:
            self._sync_directory()

    def replace(self, numbers: Sequence[int], records: Sequence[tuple[int, bytes]]) -> Optional[int]:
        """Atomically replace closed segments ``numbers`` by one holding ``records``.

        Returns the new segment's number (the newest replaced), or None when ``records`` is empty
        and the segments were simply deleted."""
        numbers = sorted(numbers)
        if not numbers:
            return None
        if not records:
            self.delete(numbers)
            return None
        last = numbers[-1]
        if last == self.current:
            raise ValueError("cannot replace the segment open for appends")
        tmp = self.directory / f"{last:016d}.tmp"
        data = frame(BASE, msgpack.packb(numbers[0])) + b"".join(frame(k, p) for k, p in records)
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync != "never":
                f.flush()
                os.fdatasync(f.fileno())
        os.replace(tmp, self._path(last))
        self.sizes[last] = len(data)
        self._dir_dirty = True
        if self.fsync != "never":
            self._sync_directory()  # the BASE segment is in place before its predecessors go
        self.delete(numbers[:-1])
        return last

    def close(self) -> None:
        """Sync (unless ``never``), close and unlock."""
        if self.fsync != "never":
            self.sync()
        self.rotate()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


@dataclass
class _Segment:
    """What the journal knows about one of its segments."""
    newest_deadline: float = float("-inf")  # upper bound of slot + step over its points
    closed_at: Optional[float] = None  # when it stopped taking appends
    points: int = 0


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
            self._segments[numbers[-1]] = _Segment(self._bound(result.timestamps), now, len(result.names))
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
        segment.points += len(names)

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
            self._segments[kept] = _Segment(self._bound(result.timestamps), now, len(result.names))
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


@dataclass
class SpooledBody:
    """One unacknowledged body: where it is, and its text while memory allows."""
    segment: int
    offset: int
    length: int
    body: Optional[str] = None

    @property
    def key(self) -> tuple[int, int]:
        return self.segment, self.offset


class BodySpool:
    """Encoded SQS bodies in send order until SQS acknowledged them.

    At most ``cache_bytes`` of bodies are also kept in memory; the rest are read back from disk
    when their turn comes (``load``), so memory stays bounded however long the backlog."""

    def __init__(self, directory: Path | str, fsync: str = "interval", segment_bytes: int = 8 << 20,
                 cache_bytes: int = 16 << 20) -> None:
        self.log = SegmentLog(directory, fsync, segment_bytes)
        self.cache_bytes = cache_bytes
        self._pending: dict[tuple[int, int], SpooledBody] = {}  # insertion order = send order
        self._unacked: dict[int, int] = {}  # segment -> bodies not yet acknowledged
        self._cached = 0
        self.pending_bytes = 0

    @property
    def total_bytes(self) -> int:
        return self.log.total_bytes

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def recover(self) -> ScanStats:
        """Open the spool; every body not acknowledged before is pending again, oldest first."""
        log = self.log
        log.open()
        stats = ScanStats()
        for number in list(log.sizes):
            for offset, kind, payload in log.read(number, stats):
                if kind == BODY:
                    self._pending[(number, offset)] = SpooledBody(number, offset, len(payload))
                elif kind == ACK:
                    for segment, body_offset in msgpack.unpackb(payload):
                        self._pending.pop((segment, body_offset), None)
        for body in self._pending.values():
            self._unacked[body.segment] = self._unacked.get(body.segment, 0) + 1
            self.pending_bytes += body.length
        self._delete_finished()
        return stats

    def _delete_finished(self) -> None:
        # only a prefix: an ACK record refers to bodies of its own or earlier segments, so a
        # segment goes only once every earlier one has nothing pending either
        finished = []
        for number in self.log.sizes:
            if self._unacked.get(number) or number == self.log.current:
                break
            finished.append(number)
        self.log.delete(finished)

    def add(self, bodies: Sequence[str]) -> None:
        """Append bodies behind the ones already pending."""
        if not bodies:
            return
        log = self.log
        if log.current is not None and log.sizes[log.current] >= log.segment_bytes:
            log.rotate()
        raw = [body.encode("ascii") for body in bodies]
        number, offsets = log.append([(BODY, data) for data in raw])
        self._unacked[number] = self._unacked.get(number, 0) + len(bodies)
        for body, data, offset in zip(bodies, raw, offsets):
            keep = self._cached + len(data) <= self.cache_bytes
            self._cached += len(data) if keep else 0
            self._pending[(number, offset)] = SpooledBody(number, offset, len(data), body if keep else None)
            self.pending_bytes += len(data)

    def head(self, max_count: int, max_bytes: int) -> list[SpooledBody]:
        """The oldest pending bodies, at most ``max_count`` and (beyond the first) ``max_bytes``."""
        taken: list[SpooledBody] = []
        size = 0
        for body in self._pending.values():
            if len(taken) >= max_count or (taken and size + body.length > max_bytes):
                break
            taken.append(body)
            size += body.length
        return taken

    def load(self, bodies: Sequence[SpooledBody]) -> list[str]:
        """The texts of ``bodies``, read from disk when not in memory (safe in another thread)."""
        return [b.body if b.body is not None else self.log.read_at(b.segment, b.offset).decode("ascii")
                for b in bodies]

    def ack(self, keys: Sequence[tuple[int, int]]) -> int:
        """Record bodies as sent (or given up); delete segments left with nothing pending.
        Returns the bytes of pending bodies this removed."""
        removed = [self._pending.pop(key) for key in keys if key in self._pending]
        if not removed:
            return 0
        log = self.log
        log.append([(ACK, msgpack.packb([list(body.key) for body in removed]))])
        freed = 0
        for body in removed:
            freed += body.length
            if body.body is not None:
                self._cached -= body.length
            self._unacked[body.segment] -= 1
        self.pending_bytes -= freed
        empty = [n for n, count in self._unacked.items() if count == 0]
        for number in empty:
            del self._unacked[number]
        if log.current is not None and (log.current in empty or not self._pending):
            log.rotate()  # the healthy path: everything sent, start afresh
        self._delete_finished()
        return freed

    def sync(self) -> None:
        self.log.sync()

    def close(self) -> None:
        self.log.close()

