"""The body spool: encoded SQS bodies on local disk until SQS acknowledged them.

``BodySpool`` appends encoded bodies and acknowledges them with ``ACK``
records once SendMessageBatch took them. Unacknowledged bodies are sent again after a restart; a
segment is deleted when all its bodies are acknowledged. A body for one metrics-queue partition
of several is a ``PARTITION_BODY`` record (a 2-byte partition number, then the body); a plain
``BODY`` record (the only kind of spools written before partitions) is for partition 0, which with
one partition is the one queue. Framing, fsync policies and rewrites:
``turok_core.spool.segments``. Pure library: no reactor; one thread owns a spool, except ``load``
(reads only) which may run in another.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import msgpack

from turok_core.spool.segments import ACK, BODY, PARTITION_BODY, ScanStats, SegmentLog

PARTITION = struct.Struct(">H")


@dataclass
class SpooledBody:
    """One unacknowledged body: where it is, and its text while memory allows."""
    segment: int
    offset: int
    length: int  # of the body
    body: Optional[str] = None
    partition: int = 0  # the metrics-queue partition it goes to
    skip: int = 0  # bytes of the record before the body (the partition number)

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
                elif kind == PARTITION_BODY:
                    (partition,) = PARTITION.unpack_from(payload)
                    self._pending[(number, offset)] = SpooledBody(number, offset, len(payload) - PARTITION.size,
                                                                  None, partition, PARTITION.size)
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

    def add(self, bodies: Sequence[str], partitions: Optional[Sequence[int]] = None) -> None:
        """Append bodies behind the ones already pending; ``partitions`` gives each body's
        partition (None: one partition, plain ``BODY`` records)."""
        if not bodies:
            return
        log = self.log
        if log.current is not None and log.sizes[log.current] >= log.segment_bytes:
            log.rotate()
        raw = [body.encode("ascii") for body in bodies]
        if partitions is None:
            parts, skip = [0] * len(bodies), 0
            number, offsets = log.append([(BODY, data) for data in raw])
        else:
            parts, skip = list(partitions), PARTITION.size
            number, offsets = log.append([(PARTITION_BODY, PARTITION.pack(partition) + data)
                                          for partition, data in zip(parts, raw)])
        self._unacked[number] = self._unacked.get(number, 0) + len(bodies)
        for body, data, offset, partition in zip(bodies, raw, offsets, parts):
            keep = self._cached + len(data) <= self.cache_bytes
            self._cached += len(data) if keep else 0
            self._pending[(number, offset)] = SpooledBody(number, offset, len(data), body if keep else None,
                                                          partition, skip)
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
        return [b.body if b.body is not None else self.log.read_at(b.segment, b.offset)[b.skip:].decode("ascii")
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
