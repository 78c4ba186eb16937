"""What every index store does, written once: sharded names changed by compare-and-swap, also
while the index moves to more shards.

An index store keeps metric names in the shards of the layout its manifest names
(``turok_core.index.layout``; ``turok_core.index.shards.shard_of`` picks the shard), created by
the first writer with its configured count. ``add_names`` and ``remove_names`` change each shard
they touch by compare-and-swap: read the shard and its version, compute the new names, write only
if the version is still the one read; a lost race re-reads and retries with jittered backoff, up
to ``max_attempts``, then raises ``IndexConflictError``. Both are idempotent, so a caller that
failed just retries, and a name another writer adds meanwhile is never lost.

While the index moves from N to M shards (``turok_core.index.reshard``) a name's shard is the
open old shard of its range, or once that is sealed, its new shard: a writer that finds the new
shard missing creates it from the sealed names (the same names the mover would put in it) with
its own change applied, so nothing is ever merged into a new shard after a removal there. A
writer that meets a seal its manifest did not announce re-reads the manifest and starts over.
Every call ends by revalidating the manifest: if a move started or finished during the call the
call runs again with the new manifest (the writes are idempotent), so a writer that slept through
a whole move, whose old shard was deleted and which wrote where nobody reads any more, still
leaves its names where they belong.

A call reads every shard it touches first, then checks the manifest once for all the shards it
creates (not once per shard). A writer keeps a copy of each shard it last read or wrote (up to
``COPY_MAX_NAMES`` names in all): a shard it has a copy of is changed without a read, by a
conditional write against the copy's version; a copy found stale (the write refused) is dropped
and the shard read as usual, which is no lost race. A copy is never trusted to hold a name: a
shard the copy says needs no write is read first. A call touching several shards it has no copy
of lists the layout's versions first (one request, where the driver can: ``list_versions``):
a shard not listed is missing without a read, a copy of the listed version is as good as a read.

``ShardedIndexStore`` holds that logic; a driver supplies the primitives (``_read_manifest``,
``put_manifest``, ``read_object``, ``put_object``, ``layouts``, ``delete_layout``):
``turok_core.index.s3_store.IndexStore`` on S3 and ``turok_core.index.memory_store.MemoryIndexStore``
in memory. Both run the same contract suite (tests/index/test_index_store_contract.py).
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Callable, Collection, Iterable, Optional, Union

from turok_core.index.layout import MISSING, Manifest, ShardObject
from turok_core.index.shards import shard_of, valid_name
from turok_core.runtime.retry import Backoff

# a lost race is retried soon: the other writer is done; the wide jitter splits contenders apart
CONFLICT_BACKOFF = Backoff(base=0.02, cap=2.0, jitter=(0.5, 1.5))
Change = Callable[[set[str], set[str]], set[str]]  # (a shard's names, the call's names) -> new names
ManifestState = tuple[Manifest, Optional[str]]  # a manifest and its version
# the names a writer's shard copies hold at most (a name and its set slot: ~100 bytes)
COPY_MAX_NAMES = 500_000


class IndexConflictError(RuntimeError):
    """A shard (or the manifest) kept changing under us for every attempt; retry later."""


class _LayoutChanged(Exception):
    """A shard is sealed for a layout the writer's manifest does not name: read it again."""


@dataclass
class AddStats:
    """What one ``add_names`` call did."""
    names: int = 0  # distinct valid names offered
    added: int = 0  # names that were new to the index
    rejected: int = 0  # names that cannot be indexed (empty, line breaks, empty components)
    shard_writes: int = 0  # successful PUTs
    shards_unchanged: int = 0  # shards that already held every offered name (no PUT)
    conflicts: int = 0  # lost compare-and-swap races, each followed by a retry
    shard_names: int = 0  # names held by the shards written, summed: how full the shards are

    def count(self, changed: int, held: int) -> None:
        self.added += changed
        self.shard_names += held

    @property
    def mean_shard_names(self) -> float:
        """The mean number of names of the shards this call wrote (0 when it wrote none)."""
        return self.shard_names / self.shard_writes if self.shard_writes else 0.0


@dataclass
class RemoveStats:
    """What one ``remove_names`` call did."""
    names: int = 0  # distinct names offered
    removed: int = 0  # names that were in the index and are not any more
    shard_writes: int = 0
    shards_unchanged: int = 0  # shards holding none of the offered names (no PUT)
    conflicts: int = 0

    def count(self, changed: int, held: int) -> None:
        self.removed += changed


Stats = Union[AddStats, RemoveStats]


def sealed_part(sealed: Collection[str], new: int, target: int) -> set[str]:
    """The names of a sealed old shard that belong in shard ``target`` of ``new`` shards: what the
    new shard holds when it is created."""
    return {name for name in sealed if shard_of(name, new) == target}


def grouped(names: Iterable[str], shards: int) -> list[tuple[int, set[str]]]:
    """``names`` by their shard among ``shards``, in shard order."""
    groups: dict[int, set[str]] = {}
    for name in names:
        groups.setdefault(shard_of(name, shards), set()).add(name)
    return sorted(groups.items())


class ShardedIndexStore(ABC):
    """Adds and removes metric names; safe with any number of concurrent writers on one index,
    and while it moves to more shards (``turok_core.index.reshard``)."""

    def __init__(self, configured_shards: int, max_attempts: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._configured_shards = configured_shards
        self._max_attempts = max(1, max_attempts)
        self._sleep = sleep
        # the manifest read last and its version, replaced as one: an indexer's pollers share a
        # store, and a write must never pair one thread's manifest with another's version
        self._known: Optional[ManifestState] = None
        # (layout, shard): the shard as this writer last read or wrote it (module docstring)
        self._copies: dict[tuple[int, int], ShardObject] = {}
        self._copy_names = 0
        self._copies_lock = threading.Lock()

    # --- the driver's primitives -----------------------------------------------------------------

    @abstractmethod
    def _read_manifest(self, known: Optional[str]) -> Optional[tuple[Optional[Manifest], Optional[str]]]:
        """(the manifest, None when there is none; its version), or None when its version is
        still ``known``."""

    @abstractmethod
    def put_manifest(self, manifest: Manifest, version: Optional[str]) -> bool:
        """Replace the manifest if its version is still ``version`` (``None``: if there is none);
        False when another writer changed it first."""

    @abstractmethod
    def read_object(self, shards: int, shard: int) -> ShardObject:
        """Shard ``shard`` of layout ``shards`` as stored now (``MISSING`` when it does not exist)."""

    @abstractmethod
    def put_object(self, shards: int, shard: int, names: Collection[str], sealed_to: Optional[int],
                   version: Optional[str]) -> Optional[str]:
        """Replace the shard object if its version is still ``version`` (``None``: if it does not
        exist); its new version, or None when another writer changed (or created, or deleted) it
        first."""

    def list_versions(self, shards: int) -> Optional[dict[int, str]]:
        """The version of every shard of layout ``shards`` that exists, by shard, in one request;
        None (this default) when the driver cannot list."""
        return None

    @abstractmethod
    def layouts(self) -> list[int]:
        """The shard counts of the layouts that have objects, ascending."""

    @abstractmethod
    def delete_layout(self, shards: int) -> int:
        """Delete every object of layout ``shards``; returns how many were deleted."""

    def shard_label(self, shards: int, shard: int) -> str:
        """How errors name a shard."""
        return f"{shard} of {shards}"

    # --- the manifest ----------------------------------------------------------------------------

    def manifest(self, fresh: bool = False) -> Manifest:
        """The index's manifest, created with the configured shard count when there is none; the
        one read last unless ``fresh`` (then revalidated: a request that returns no body when it
        is unchanged)."""
        return self.manifest_state(fresh)[0]

    def manifest_state(self, fresh: bool = False) -> ManifestState:
        """``manifest(fresh)`` and its version, read together (what a compare-and-swap of the
        manifest, or a check that it is still the one a write used, needs)."""
        known = self._known
        if known is not None and not fresh:
            return known
        for _ in range(self._max_attempts):
            found = self._read_manifest(known[1] if known is not None else None)
            if found is None:  # unchanged
                assert known is not None
                return known
            manifest, version = found
            if manifest is not None:
                self._known = known = (manifest, version)
                return known
            if self.put_manifest(Manifest(self._configured_shards), None):
                known = None  # read back for its version
            # else another writer created it first: read theirs
        raise IndexConflictError("could not read or create the index manifest")

    @property
    def max_attempts(self) -> int:
        """Compare-and-swap attempts before ``IndexConflictError``."""
        return self._max_attempts

    def _manifest_changed(self, version: Optional[str]) -> bool:
        """Whether the manifest is no longer the one of ``version`` (read anew). The caller's own
        version, not the store's: another thread may have read the new manifest already."""
        return self.manifest_state(fresh=True)[1] != version

    def shard_count(self) -> int:
        """The shard count of the index's layout (the old one while it moves)."""
        return self.manifest().shards

    # --- writes ----------------------------------------------------------------------------------

    def add_names(self, names: Iterable[str]) -> AddStats:
        """Merge ``names`` into the index: one conditional write per shard that gains a name.

        Raises ``IndexConflictError`` when a shard lost every compare-and-swap attempt; shards
        written before that keep their names (adding is idempotent, so the caller just retries).
        """
        stats = AddStats()
        wanted: set[str] = set()
        for name in set(names):
            if valid_name(name):
                wanted.add(name)
            else:
                stats.rejected += 1
        stats.names = len(wanted)
        if wanted:
            self._write(wanted, lambda current, mine: current | mine, stats)
        return stats

    def remove_names(self, names: Iterable[str]) -> RemoveStats:
        """Drop ``names`` from the index: one conditional write per shard that held one of them.

        The same compare-and-swap as ``add_names``, so a name another writer adds meanwhile is
        never lost. Raises ``IndexConflictError`` when a shard lost every attempt.
        """
        wanted = set(names)
        stats = RemoveStats(names=len(wanted))
        if wanted:
            self._write(wanted, lambda current, mine: current - mine, stats)
        return stats

    def _write(self, names: set[str], change: Change, stats: Stats) -> None:
        """Apply ``change`` with the manifest read last, then revalidate the manifest: while it
        changed meanwhile, apply it again with the new one."""
        for _ in range(self._max_attempts):
            manifest, version = self.manifest_state()
            try:
                self._write_layout(manifest, version, names, change, stats)
                done = True
            except _LayoutChanged:
                done = False
            if not self._manifest_changed(version) and done:
                return
        raise IndexConflictError(f"the index's manifest kept changing for {self._max_attempts} attempts")

    def _write_layout(self, manifest: Manifest, version: Optional[str], names: set[str], change: Change,
                      stats: Stats) -> None:
        """Apply ``change`` in the layouts of ``manifest`` (of version ``version``)."""
        old, new = manifest.shards, manifest.moving_to
        groups = grouped(names, old)
        first = self._copies_or_reads(old, [shard for shard, _ in groups])
        # one manifest check for every shard this pass creates (module docstring)
        creates = any(first[shard][0].version is None and change(set(), group) for shard, group in groups)
        if creates and self._manifest_changed(version):
            raise _LayoutChanged()  # most likely an old layout deleted after a move: nothing to create there
        for shard, group in groups:
            sealed = self._swap(old, shard, group, change, stats, version, moving=new is not None,
                                first=first[shard])
            if sealed is None:
                continue
            if sealed.sealed_to != new:
                raise _LayoutChanged()
            assert new is not None
            for target, part in grouped(group, new):  # the range's names are in the new layout now
                self._swap(new, target, part, change, stats, version,
                           fill=partial(sealed_part, sealed.names, new, target))

    def _copies_or_reads(self, shards: int, wanted: list[int]) -> dict[int, tuple[ShardObject, bool]]:
        """Each ``wanted`` shard of layout ``shards`` as (this writer's copy, False), or as found
        now, (the shard, True): read, or known from the layout's listing (module docstring)."""
        with self._copies_lock:
            copies = {shard: self._copies.get((shards, shard)) for shard in wanted}
        listed = self.list_versions(shards) if sum(copy is None for copy in copies.values()) > 1 else None
        found: dict[int, tuple[ShardObject, bool]] = {}
        for shard, copy in copies.items():
            if listed is None:
                found[shard] = (copy, False) if copy is not None else (self._read(shards, shard), True)
            elif shard not in listed:
                self._remember(shards, shard, None)
                found[shard] = (MISSING, True)
            elif copy is not None and copy.version == listed[shard]:
                found[shard] = (copy, True)
            else:
                found[shard] = (self._read(shards, shard), True)
        return found

    def _read(self, shards: int, shard: int) -> ShardObject:
        found = self.read_object(shards, shard)
        self._remember(shards, shard, found)
        return found

    def _remember(self, shards: int, shard: int, found: Optional[ShardObject]) -> None:
        """Keep ``found`` as the copy of the shard (None, or a missing shard: drop the copy)."""
        with self._copies_lock:
            dropped = self._copies.pop((shards, shard), None)
            if dropped is not None:
                self._copy_names -= len(dropped.names)
            if found is None or found.version is None or self._copy_names + len(found.names) > COPY_MAX_NAMES:
                return
            self._copies[(shards, shard)] = found
            self._copy_names += len(found.names)

    def _swap(self, shards: int, shard: int, names: set[str], change: Change, stats: Stats,
              version: Optional[str], moving: bool = False, fill: Optional[Callable[[], set[str]]] = None,
              first: Optional[tuple[ShardObject, bool]] = None) -> Optional[ShardObject]:
        """Compare-and-swap one shard to ``change(its names, names)``, re-reading after a lost race.

        ``first``: the shard as ``_write_layout`` found it, and whether that is fresh (read or
        listed for this call) rather than this writer's copy; when it was missing, the manifest
        was checked since. A missing shard holds nothing, or with ``fill`` (a new shard during a move)
        the sealed names ``fill`` gives; without ``fill`` it is created only while the manifest is
        still of ``version``, the one the write uses. Returns the shard when it is sealed and
        ``moving`` (the caller writes the new layout), else None; raises ``_LayoutChanged`` for
        any other seal and ``IndexConflictError`` when every attempt lost."""
        attempt = 0
        while True:
            checked = first is not None  # a missing shard in ``first``: the manifest was checked since
            found, fresh = first if first is not None else (self._read(shards, shard), True)
            first = None
            if not fresh and (found.sealed_to is not None or change(set(found.names), names) == set(found.names)):
                continue  # a copy never decides: read the shard
            if found.sealed_to is not None:
                if moving:
                    return found
                raise _LayoutChanged()
            current = set(found.names) if found.version is not None or fill is None else fill()
            updated = change(current, names)
            if updated == current:  # a missing new shard stays missing: the mover fills it
                stats.shards_unchanged += 1
                return None
            if found.version is None and fill is None and not checked and self._manifest_changed(version):
                raise _LayoutChanged()  # most likely an old layout deleted after a move: nothing to create there
            written = self.put_object(shards, shard, updated, None, found.version)
            if written:
                self._remember(shards, shard, ShardObject(updated, None, written))
                stats.shard_writes += 1
                stats.count(len(updated ^ current), len(updated))
                return None
            self._remember(shards, shard, None)
            if not fresh:
                continue  # a stale copy: no race lost, read it
            stats.conflicts += 1
            attempt += 1
            if attempt >= self._max_attempts:
                break
            self._sleep(CONFLICT_BACKOFF.delay(attempt - 1))
        raise IndexConflictError(f"shard {self.shard_label(shards, shard)} kept changing for "
                                 f"{self._max_attempts} attempts")
