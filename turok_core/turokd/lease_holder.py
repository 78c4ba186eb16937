"""The leases one turokd holds: heartbeats against the lease table, and the proof needed to write.

``PartitionLeases.heartbeat`` (blocking: run it in the AWS thread pool) says this turokd is alive,
reads the table, and applies ``leases.plan_leases``: renews what it keeps, takes what it may, and
reports what it gained, lost, and should give back (the service writes those partitions' open
blocks first, then calls ``release``). ``may_write(partition)`` is the check before every write:
the lease is valid, by this process's clock, at least ``margin`` seconds longer. The validity is
counted from *before* the renewing call, so it never outlasts the expiry the table holds; other
turokd compare that expiry with their own clock, so clocks must agree to well within ``margin``.
Thread-safe: heartbeats run in the pool while the reactor thread asks ``may_write``.

A running ``turok-import`` (an ``import-<id>`` item, ``storage/leases.py``) writes blocks that
start before its ``before`` time. While one lives, ``shared_before`` returns that time: turokd
merges those blocks with conditions, not as sole writer. ``owned_since`` never reaches back
before any import seen, so no block an import may have written is ever put whole over it.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional, TypeVar

from turok_core.runtime.retry import Backoff
from turok_core.storage.leases import Lease, LeaseStore
from turok_core.turokd.leases import plan_leases
from turok_core.wire.partitions import partition_of

T = TypeVar("T")
CALL_ATTEMPTS = 4  # tries of each lease-table call within one heartbeat
CALL_BACKOFF = Backoff(base=0.05, cap=0.5)


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
                 worker: Optional[str] = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.table = table
        self.partitions = max(1, partitions)
        self.duration = duration
        self.margin = margin
        self.worker = worker or worker_id()
        self.clock = clock
        self._sleep = sleep
        self.last_error: Optional[BaseException] = None  # of a lease-table call that failed
        self._lock = threading.Lock()
        self._held: dict[int, Lease] = {}
        self._valid_until: dict[int, float] = {}
        self._since: dict[int, float] = {}
        self._took_over: set[int] = set()  # taken from a turokd that never gave it back
        self._shared_before: Optional[float] = None  # blocks a live import writes start before this
        self._import_floor = 0.0  # the latest ``before`` of any import seen: ownership starts after
        self._import_live = False  # the last table read showed a running import
        self._quiet_since = 0.0  # the end of the first table read showing none after one ran

    @property
    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def heartbeat(self) -> LeaseChanges:
        """Announce, read, renew, take (blocking); returns what changed.

        Each call is retried (``CALL_ATTEMPTS``); one still failing skips only its own step: an
        unread table still renews what is held, and a lease whose renewal failed or was refused
        stays held (its validity not extended) until the table read shows another owner. A write
        whose answer was lost (applied or not) is settled by the next read: a lease the table
        shows as this turokd's is its own, at the table's counter."""
        started = self.clock()
        changes = LeaseChanges()
        self._call(self.table.announce, self.worker, started + self.duration)
        view = self._call(self.table.read)
        with self._lock:
            held = dict(self._held)
        if view is None:
            for lease in held.values():
                self._renew(lease, started)
            return changes
        self._note_imports(view.imports, started, self.clock())
        plan = plan_leases(view, self.worker, held, self.partitions, started)
        changes.lost, changes.release, changes.share = list(plan.lost), list(plan.release), plan.share
        for lease in plan.renew + [view.leases[p] for p in plan.release]:  # keep what is given back, too
            self._renew(lease, started)
        for partition, seen in plan.take:
            now = self.clock()
            taken = self._call(self.table.take, partition, self.worker, now + self.duration, seen)
            if taken is not None:
                with self._lock:
                    self._held[partition] = taken
                    self._valid_until[partition] = now + self.duration
                    self._since[partition] = now
                    # an owner still named on an expired lease died or was cut off: what it held
                    # in memory (coarse blocks pending) may be missing from DynamoDB
                    if seen is not None and seen.owner and seen.owner != self.worker:
                        self._took_over.add(partition)
                changes.gained.append(partition)
        for partition in changes.lost:
            self.drop(partition)
        return changes

    def _note_imports(self, imports: dict[str, tuple[float, float]], now: float, read_at: float) -> None:
        live = [before for expires, before in imports.values() if expires > now]
        with self._lock:
            self._shared_before = max(live) if live else None
            self._import_floor = max([self._import_floor, *(before for _e, before in imports.values())])
            if not live and self._import_live:
                self._quiet_since = read_at  # the import's item is gone, so are its writes
            self._import_live = bool(live)

    def shared_before(self) -> Optional[float]:
        """Blocks starting before this time are written by a running import too (None: no import)."""
        with self._lock:
            return self._shared_before

    def _renew(self, lease: Lease, started: float) -> None:
        renewed = self._call(self.table.renew, lease, started + self.duration)
        with self._lock:
            if renewed is not None and lease.partition in self._held:  # not dropped meanwhile
                self._held[lease.partition] = renewed
                self._valid_until[lease.partition] = started + self.duration
            elif lease.partition in self._held:
                self._held[lease.partition] = lease  # the table's counter, for the next renew

    def _call(self, function: Callable[..., T], *args: object) -> Optional[T]:
        """``function(*args)`` retried on errors; None when every attempt failed."""
        for attempt in range(CALL_ATTEMPTS):
            try:
                return function(*args)
            except Exception as exc:  # throttled, 5xx, network: the heartbeat goes on without it
                self.last_error = exc
                if attempt + 1 < CALL_ATTEMPTS:
                    self._sleep(CALL_BACKOFF.delay(attempt))
        return None

    def may_write(self, partition: int, now: Optional[float] = None) -> bool:
        """This turokd provably holds ``partition`` for at least ``margin`` more seconds."""
        now = self.clock() if now is None else now
        with self._lock:
            return partition in self._held and self._valid_until.get(partition, 0.0) > now + self.margin

    def took_over(self, partition: int) -> bool:
        """``partition`` was taken from a turokd that held it and never gave it back."""
        with self._lock:
            return partition in self._took_over

    def owned_since(self, metric: str) -> Optional[float]:
        """Since when this turokd has been the only writer of ``metric``'s partition (held, and
        no import writing since); None when it does not hold it."""
        partition = partition_of(metric, self.partitions)
        with self._lock:
            if partition not in self._held:
                return None
            return max(self._since.get(partition, 0.0), self._import_floor)

    def records_since(self, metric: str) -> Optional[float]:
        """Since when no writer but this turokd has written ``metric``'s blocks, wherever they
        start: a record of block starts (``storage/block_starts.py``) read after this time names
        every block of the metric anyone else wrote. None when the partition is not held or an
        import is running (it writes what it likes until its item is gone)."""
        partition = partition_of(metric, self.partitions)
        with self._lock:
            if partition not in self._held or self._shared_before is not None:
                return None
            return max(self._since.get(partition, 0.0), self._quiet_since)

    def drop(self, partition: int) -> None:
        """Forget ``partition`` (lost, or no longer provably held); its lease expires by itself."""
        with self._lock:
            self._held.pop(partition, None)
            self._valid_until.pop(partition, None)
            self._since.pop(partition, None)
            self._took_over.discard(partition)

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
