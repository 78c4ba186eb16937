"""The lease table in memory: ``LeaseTable``'s twin for unit tests and single-process runs.

Same items, same conditions (``leases.py``); thread-safe, since turokd calls it from its pool.
"""
from __future__ import annotations

import threading
from typing import Optional

from turok_core.storage.leases import Lease, LeaseView


class MemoryLeaseTable:
    """Partition leases and worker expiries in a dict, changed under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[int, Lease] = {}
        self._workers: dict[str, float] = {}
        self._imports: dict[str, tuple[float, float]] = {}

    def read(self) -> LeaseView:
        with self._lock:
            return LeaseView(dict(self._leases), dict(self._workers), dict(self._imports))

    def take(self, partition: int, owner: str, expires: float, seen: Optional[Lease]) -> Optional[Lease]:
        with self._lock:
            current = self._leases.get(partition)
            if (current is None) != (seen is None) or (current and seen and current.counter != seen.counter):
                return None
            lease = Lease(partition, owner, float(expires), (current.counter if current else 0) + 1)
            self._leases[partition] = lease
            return lease

    def renew(self, lease: Lease, expires: float) -> Optional[Lease]:
        with self._lock:
            if not self._held_as(lease):
                return None
            renewed = Lease(lease.partition, lease.owner, float(expires), lease.counter + 1)
            self._leases[lease.partition] = renewed
            return renewed

    def release(self, lease: Lease) -> bool:
        with self._lock:
            if not self._held_as(lease):
                return False
            self._leases[lease.partition] = Lease(lease.partition, "", 0.0, lease.counter + 1)
            return True

    def announce(self, worker: str, expires: float) -> None:
        with self._lock:
            self._workers[worker] = float(expires)

    def retire(self, worker: str) -> None:
        with self._lock:
            self._workers.pop(worker, None)

    def announce_import(self, name: str, expires: float, before: float) -> None:
        with self._lock:
            self._imports[name] = (float(expires), float(before))

    def end_import(self, name: str) -> None:
        with self._lock:
            self._imports.pop(name, None)

    def _held_as(self, lease: Lease) -> bool:
        current = self._leases.get(lease.partition)
        return current is not None and current.owner == lease.owner and current.counter == lease.counter
