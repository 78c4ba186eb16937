"""Which blocks no other writer has written: the day tables' records of block starts, read once
per ownership.

A turokd holding a metric's partition is its only writer since ``records_since(metric)``
(``lease_holder.PartitionLeases.records_since``: the lease taken, no import running or running
since). Every writer adds a block's start to its table's record before writing the block
(``storage/block_starts.py``), so a record read after that moment names every start at which
anyone else wrote a block of the metric. A start it does not name, at which this turokd has not
written itself (``fresh.py`` remembers that), holds no block of the metric: ``unwritten`` says so,
and turokd puts such a block whole and computes coarse blocks from memory without reading, even
for data older than its lease (a restart, a lease move, history sent late).

One record read per table and ownership moment (the ``(table, since)`` pair), not per block: this
turokd's own later writes are known to ``fresh.py``, and nobody else's can come while it holds
the lease. A table whose record is not trusted (made before records existed) answers False, and
the caller reads DynamoDB as before. Blocking (a consistent GetItem on first use); one thread at
a time, like ``BlockWriter.close``. Called as ``unwritten`` itself; within ``one_view()``
(``fresh.FreshBlocks.one_view``: one close) ``records_since`` is asked once per metric, not for
every block of it (a lock and a CRC of the name each time in the service).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Protocol

RecordsSince = Callable[[str], Optional[float]]
MAX_SNAPSHOTS = 4096  # (table, since) pairs kept; cleared when full (re-read on next use)


class StartRecords(Protocol):
    def table_for(self, timestamp: int, step: int) -> str: ...

    def block_starts(self, table: str) -> Optional[frozenset[int]]: ...


class StartSnapshots:
    """Snapshots of the day tables' block-start records, taken after this turokd's ownership began."""

    def __init__(self, store: StartRecords, records_since: RecordsSince) -> None:
        self._store = store
        self._records_since = records_since
        self._snapshots: dict[tuple[str, float], Optional[frozenset[int]]] = {}
        self._tables: dict[tuple[int, int], str] = {}  # (step, block start) → its day table
        self._since: Optional[dict[str, Optional[float]]] = None  # records_since's answers in one_view
        self.reads = 0  # record reads made (a counter for tests and benchmarks)

    @contextmanager
    def one_view(self) -> Iterator[None]:
        """Ask ``records_since`` once per metric until the block ends."""
        self._since = {}
        try:
            yield
        finally:
            self._since = None

    def unwritten(self, metric: str, step: int, start: int) -> bool:
        """No writer but this turokd can have written ``metric``'s block at ``(step, start)``."""
        known = self._since
        if known is None:
            since = self._records_since(metric)
        elif metric in known:
            since = known[metric]
        else:
            since = known[metric] = self._records_since(metric)
        if since is None:
            return False
        table = self._tables.get((step, start))
        if table is None:
            if len(self._tables) >= MAX_SNAPSHOTS:
                self._tables.clear()
            table = self._tables[(step, start)] = self._store.table_for(start, step)
        key = (table, since)
        if key not in self._snapshots:
            if len(self._snapshots) >= MAX_SNAPSHOTS:
                self._snapshots.clear()
            self._snapshots[key] = self._store.block_starts(table)  # read now, so after ``since``
            self.reads += 1
        snapshot = self._snapshots[key]
        return snapshot is not None and start not in snapshot

    __call__ = unwritten  # the hook itself (FreshBlocks' unwritten), without a call more per block
