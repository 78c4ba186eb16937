"""The import's mark in the lease table: while it runs, turokd is not the sole writer of old blocks.

turokd merges the blocks of a partition it holds without conditions (read, merge, put back) and
puts new blocks whole without a read (``turokd/fresh.py``). An import writing the same block
between such a read and put, or before such a put, would lose its slots. So the import first
writes an ``import-<id>`` item (``storage/leases.py``): it expires unless renewed, and names
``before``, the import's clock (every slot it writes starts earlier). Each turokd reads it at its
next heartbeat; from then on it merges blocks starting before ``before`` with conditional puts
(which the import's conditional puts cannot race) and never puts them whole. Before its first
write the import waits until every live turokd has begun a heartbeat since the mark was written
(its ``worker-<id>`` expiry moved past the mark's time plus a lease's duration: it read the
table after), at most ``grace``, then ``settle`` more for merges begun before (none when no
turokd is alive). It renews the item while it runs and deletes it when its last write is done;
a killed import's item expires by itself after ``ttl``. A turokd whose table reads all fail
throughout that wait keeps merging as before: it also cannot take new partitions then.

Blocking (boto3 through the ``LeaseStore``); renewals run on a daemon thread.
"""
from __future__ import annotations

import threading
import time
import uuid
from typing import Callable, Optional

from turok_core.model.config import TurokConfig
from turok_core.storage.leases import LeaseStore

TTL_LEASES = 3  # the mark lives this many lease durations unless renewed
POLL_SECONDS = 0.5  # lease-table reads while waiting for every turokd to see the mark


class ImportGuardError(RuntimeError):
    """The mark could not be renewed in time: turokd may merge as sole writer again, stop writing."""


class ImportGuard:
    """The mark of one import run (see the module); use as a context manager around the writes."""

    def __init__(self, table: LeaseStore, before: float, lease_duration: float, grace: float, settle: float,
                 ttl: float, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 name: Optional[str] = None) -> None:
        self.table = table
        self.before = before
        self.lease_duration = lease_duration
        self.grace = grace
        self.settle = settle
        self.ttl = ttl
        self.clock = clock
        self._sleep = sleep
        self.name = name or uuid.uuid4().hex[:12]
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def for_config(cls, table: LeaseStore, config: TurokConfig, before: float) -> ImportGuard:
        """The guard turokd with this configuration honours: grace and ttl from its lease timings."""
        return cls(table, before, config.lease_duration_seconds,
                   config.lease_heartbeat_seconds + config.lease_duration_seconds,
                   config.lease_write_margin_seconds, TTL_LEASES * config.lease_duration_seconds)

    def __enter__(self) -> ImportGuard:
        marked = self._renew()
        self._thread = threading.Thread(target=self._keep, name="turok-import-guard", daemon=True)
        self._thread.start()
        if self.wait_seen(marked):
            self._sleep(self.settle)  # exclusive merges a turokd began before it read the mark
        self.check()
        return self

    def wait_seen(self, marked: float) -> bool:
        """Wait (at most ``grace``) until every live turokd read the table after ``marked``; False
        when no turokd is alive."""
        deadline = marked + self.grace
        seen_any = False
        while True:
            now = self.clock()
            workers = self.table.read().workers
            live = [expires for expires in workers.values() if expires > now]
            seen_any = seen_any or bool(live)
            if all(expires > marked + self.lease_duration for expires in live) or now >= deadline:
                return seen_any
            self._sleep(min(POLL_SECONDS, max(0.0, deadline - now)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        self.table.end_import(self.name)

    def check(self) -> None:
        """Raise ``ImportGuardError`` unless the mark is certainly valid for half its ttl more."""
        if self._valid_until - self.clock() < self.ttl / 2:
            raise ImportGuardError(f"the import's mark in the lease table could not be renewed "
                                   f"(valid {self._valid_until - self.clock():.0f}s more)")

    def _renew(self) -> float:
        started = self.clock()
        self.table.announce_import(self.name, started + self.ttl, self.before)
        self._valid_until = started + self.ttl
        return started

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl / 6):
            try:
                self._renew()
            except Exception:  # throttled, network: the next round tries again; check() tells the import
                continue
