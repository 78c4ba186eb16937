"""Which closed blocks turokd may put whole, without reading them first.

A block may be written with a plain batched put (``BlockStore.put_blocks``) only when no other
item can exist under its key, and this turokd has not written a block of that (kind, step, start)
before: either it has been the only writer of the metric's partition since before the block
began (``owned_since(metric) <= block start``: the partition lease, wired by the service; ``None``
or no hook means unknown), or it holds the partition and the table's record of block starts, read
since it became the only writer, does not name the start (``unwritten``, ``start_snapshots.py``).
Anything else (late data for a block written already, unknown ownership, a start the record
names) is merged: read, slots set, put back, and only where another writer may exist (no
partition held) with a conditional put per block; a metric whose partition this turokd holds
(``held``) is merged in batches without conditions, except a block starting before
``shared_before()`` (a running ``turok-import`` writes those too: merged with conditions).

A base block at a step that is a coarser archive of its metric (old points stored straight
there, ``backfill.py``) is remembered as ``BACKFILL`` too: the coarse block of that id, rolled up
from the finer archive, is then merged into it, never put whole over it.

"Written before" is remembered per ``(kind, step, block start)``, not per metric: a few hundred
entries a day. A metric whose block id was written while it had no data there is merged too,
which is safe, only dearer. Entries older than ``keep_seconds`` are forgotten, and blocks older
than the newest forgotten one are always merged, so forgetting never lets a put replace an item.
Used by ``BlockWriter.close``, one thread at a time.

Within ``one_view()`` (a whole ``BlockWriter.close``) ``owned_since`` is asked once per metric
and ``shared_before`` once: the answers are a view of the lease taken when the close began, as
the service's ``may_write`` check before the close is, so asking again for every block and coarse
plan of a metric (a lock and a CRC of the name each time) bought nothing. The view holds one
entry per metric closed (~50 bytes, the name and the time being shared) until the close ends;
``unwritten`` is still asked per block (a view of it would hold a key per block), but an
``unwritten`` hook with a ``one_view()`` of its own (``StartSnapshots``) enters it too.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterable, Iterator, Optional

OwnedSince = Callable[[str], Optional[float]]
SharedBefore = Callable[[], Optional[float]]
Unwritten = Callable[[str, int, int], bool]  # (metric, step, start): no other writer wrote that block
BASE = "base"  # kinds of block: written from messages, or computed by the rollups
COARSE = "coarse"
BACKFILL = "backfill"  # written from messages at a step that is a coarser archive of the metric
KEEP_SECONDS = 8 * 86400.0


class FreshBlocks:
    """The ownership hook and the block ids written so far."""

    def __init__(self, owned_since: Optional[OwnedSince] = None, keep_seconds: float = KEEP_SECONDS,
                 shared_before: Optional[SharedBefore] = None, unwritten: Optional[Unwritten] = None) -> None:
        self._owned_since = owned_since
        self._shared_before = shared_before
        self._unwritten = unwritten
        self._keep = keep_seconds
        self._written: dict[tuple[str, int], set[int]] = {}  # (kind, step) → block starts
        self._floor: dict[tuple[str, int], int] = {}  # (kind, step) → oldest start still remembered
        # the hooks' answers during one_view(), else None (asked every time)
        self._since: Optional[dict[str, Optional[float]]] = None
        self._shared: Optional[list[Optional[float]]] = None

    @contextmanager
    def one_view(self) -> Iterator[None]:
        """Ask ``owned_since`` once per metric and ``shared_before`` once until the block ends."""
        self._since, self._shared = {}, None
        view: Optional[Callable[[], ContextManager[None]]] = getattr(self._unwritten, "one_view", None)
        try:
            with view() if view is not None else nullcontext():
                yield
        finally:
            self._since = self._shared = None

    def _owned(self, metric: str) -> Optional[float]:
        """``owned_since(metric)``, asked once per metric within ``one_view``."""
        if self._owned_since is None:
            return None
        known = self._since
        if known is None:
            return self._owned_since(metric)
        if metric in known:
            return known[metric]
        since = known[metric] = self._owned_since(metric)
        return since

    def _shared_start(self) -> Optional[float]:
        """``shared_before()``, asked once within ``one_view``."""
        if self._shared_before is None:
            return None
        if self._since is None:
            return self._shared_before()
        if self._shared is None:
            self._shared = [self._shared_before()]
        return self._shared[0]

    def owned(self, metric: str, start: int) -> bool:
        """This turokd has been the metric's only writer since ``start`` or earlier."""
        since = self._owned(metric)
        return since is not None and start >= since

    def held(self, metric: str, start: int) -> bool:
        """This turokd is the only writer of the metric's block starting at ``start`` now (merged
        without conditions): it holds the partition and no running import writes that block."""
        if self._owned(metric) is None:
            return False
        shared = self._shared_start()
        return shared is None or start >= shared

    def sole(self, metric: str, step: int, start: int) -> bool:
        """No writer but this turokd can have written the metric's block at ``(step, start)``:
        owned since before it began, or held and not named by the record of block starts."""
        return self.sole_all(metric, step, (start,))

    def sole_all(self, metric: str, step: int, starts: Iterable[int]) -> bool:
        """``sole`` for each of the metric's blocks at ``starts`` (the ownership looked up once)."""
        since = self._owned(metric)
        if since is None:
            return False
        shared: Optional[float] = None
        asked = False
        for start in starts:
            if start >= since:
                continue  # owned since before it began
            if self._unwritten is None:
                return False
            if not asked:
                shared, asked = self._shared_start(), True
            if (shared is not None and start < shared) or not self._unwritten(metric, step, start):
                return False  # a running import writes it too, or the record names it
        return True

    def written(self, kind: str, step: int, start: int) -> bool:
        """A block of this id was written (or may have been: forgotten) by this writer."""
        key = (kind, step)
        return start < self._floor.get(key, -1) or start in self._written.get(key, ())

    def fresh(self, kind: str, metric: str, step: int, start: int) -> bool:
        """The block may be put whole without a read (a coarse block not if old points were
        stored straight into its id: ``BACKFILL``)."""
        if kind == COARSE and self.written(BACKFILL, step, start):
            return False
        return not self.written(kind, step, start) and self.sole(metric, step, start)

    def mark(self, kind: str, step: int, starts: Iterable[int]) -> None:
        """Blocks of these ids were just written."""
        self._written.setdefault((kind, step), set()).update(starts)

    def forget_before(self, now: float) -> None:
        """Forget ids older than ``keep_seconds``; blocks before them are merged from now on."""
        cutoff = now - self._keep
        for key, starts in self._written.items():
            old = [start for start in starts if start < cutoff]
            if old:
                starts.difference_update(old)
                self._floor[key] = max(self._floor.get(key, -1), max(old) + 1)
