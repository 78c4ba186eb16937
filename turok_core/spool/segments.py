"""Segment logs: CRC-framed records in numbered segment files, the spool's storage.

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
rename and the deletes never counts a point twice. The record kinds of both logs built on it
(``turok_core.spool.journal``, ``turok_core.spool.bodies``) are numbered here, so one number
means one kind. Pure library: no reactor; one thread owns a log, except ``read_at`` (reads only)
which may run in another.
"""
from __future__ import annotations

import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import msgpack

MAGIC = b"\xa7\x54"
HEADER = struct.Struct(">2sBxII")  # magic, kind, pad, payload length, crc32(kind + payload)
MAX_PAYLOAD = 64 * 1024 * 1024  # a longer length field is damage, not a record
SUFFIX = ".seg"
FSYNC_POLICIES = ("always", "interval", "never")

# record kinds
BASE, POINTS, RELEASE, DONE, BODY, ACK, PARTITION_BODY = 1, 2, 3, 4, 5, 6, 7


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
        fd, number = self._fd, self.current
        if fd is None or number is None:  # both set, or both None
            fd, number = self._start_segment()
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
            written += os.write(fd, data[written:])
        self.sizes[number] = offset
        self._dirty = True
        if self.fsync == "always":
            self.sync()
        return number, offsets

    def _start_segment(self) -> tuple[int, int]:
        """Open the next segment for appends: its (file descriptor, number)."""
        number = self._next
        self._next += 1
        self._fd = fd = os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.current = number
        self.sizes[number] = 0
        self._dir_dirty = True
        return fd, number

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
