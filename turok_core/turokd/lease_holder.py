"""The leases one turokd holds: heartbeats against the lease table, and the proof needed to write.

``PartitionLeases.heartbeat`` (blocking: run it in the AWS thread pool) says this turokd is alive,
reads the table, and applies ``leases.plan_leases``: renews what it keeps, takes what it may, and
reports what it gained, lost, and should give back (the service writes those partitions' open
blocks first, then calls ``release``). ``may_write(partition)`` is the check before every write:
the lease is valid, by this process's clock, at least ``margin`` seconds longer. The validity is
counted from *before* the renewing call, so it never outlasts the expiry the table holds; other
turokd compare that expiry with their own clock, so clocks must agree to well within ``margin``.
Thread-safe: heartbeats run in the pool while the reactor thread asks ``may_write``.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

from turok_core.storage.leases import Lease, LeaseStore
from turok_core.turokd.leases import plan_leases
from turok_core.wire.partitions import partition_of


def worker_id() -> str:
    """A name for this turokd process, unique across hosts and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class LeaseChanges:
    """What one heartbeat changed, for the service to act on."""
    gained: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    release: list[int] = field(default_factory=list)  # held beyond the fair share: to give back
    share: int = 0


class PartitionLeases:
    """This turokd's partition leases (see the module)."""

    def __init__(self, table: LeaseStore, partitions: int, duration: float, margin: float,
                 worker: Optional[str] = None, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.partitions = max(1, partitions)
        self.duration = duration
        self.margin = margin
        self.worker = worker or worker_id()
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[int, Lease] = {}
        self._valid_until: dict[int, float] = {}
        self._since: dict[int, float] = {}

    @property
    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def heartbeat(self) -> LeaseChanges:
        """Announce, read, renew, take (blocking); returns what changed."""
        started = self.clock()
        self.table.announce(self.worker, started + self.duration)
        view = self.table.read()
        with self._lock:
            held = dict(self._held)
        plan = plan_leases(view, self.worker, held, self.partitions, started)
        changes = LeaseChanges(lost=list(plan.lost), release=list(plan.release), share=plan.share)
        for lease in plan.renew + [held[p] for p in plan.release]:  # keep what is being given back, too
            renewed = self.table.renew(lease, started + self.duration)
            if renewed is None:
                changes.lost.append(lease.partition)
            else:
                self._update(lease, renewed, started)
        for partition, seen in plan.take:
            now = self.clock()
            taken = self.table.take(partition, self.worker, now + self.duration, seen)
            if taken is not None:
                with self._lock:
                    self._held[partition] = taken
                    self._valid_until[partition] = now + self.duration
                    self._since[partition] = now
                changes.gained.append(partition)
        for partition in changes.lost:
            self.drop(partition)
        changes.release = [p for p in changes.release if p not in changes.lost]
        return changes

    def _update(self, old: Lease, renewed: Lease, started: float) -> None:
        with self._lock:
            if self._held.get(old.partition) is old:  # not dropped while the renew was in flight
                self._held[old.partition] = renewed
                self._valid_until[old.partition] = started + self.duration

    def may_write(self, partition: int, now: Optional[float] = None) -> bool:
        """This turokd provably holds ``partition`` for at least ``margin`` more seconds."""
        now = self.clock() if now is None else now
        with self._lock:
            return partition in self._held and self._valid_until.get(partition, 0.0) > now + self.margin

    def owned_since(self, metric: str) -> Optional[float]:
        """Since when this turokd has held ``metric``'s partition; None when it does not."""
        partition = partition_of(metric, self.partitions)
        with self._lock:
            return self._since.get(partition) if partition in self._held else None

    def drop(self, partition: int) -> None:
        """Forget ``partition`` (lost, or no longer provably held); its lease expires by itself."""
        with self._lock:
            self._held.pop(partition, None)
            self._valid_until.pop(partition, None)
            self._since.pop(partition, None)

    def release(self, partition: int) -> bool:
        """Give ``partition`` back (blocking); False when it had been lost already."""
        with self._lock:
            lease = self._held.get(partition)
        self.drop(partition)
        return lease is not None and self.table.release(lease)

    def retire(self) -> None:
        """Give back every lease still held and remove the worker item (blocking; a stop)."""
        for partition in self.held:
            self.release(partition)
        self.table.retire(self.worker)
