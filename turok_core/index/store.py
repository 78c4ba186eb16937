"""What every index store does, written once: sharded names changed by compare-and-swap.

An index store keeps metric names in ``shard_count()`` shards (``turok_core.index.shards.shard_of``);
the count is fixed by the first writer and every later one uses it. ``add_names`` and
``remove_names`` change each shard they touch by compare-and-swap: read the shard and its
version, compute the new names, write only if the version is still the one read; a lost race
re-reads and retries with jittered backoff, up to ``max_attempts``, then raises
``IndexConflictError``. Both are idempotent, so a caller that failed just retries, and a name
another writer adds meanwhile is never lost.

``ShardedIndexStore`` holds that logic; a driver supplies the three primitives (``shard_count``,
``read_shard``, ``_put_shard``): ``turok_core.index.s3_store.IndexStore`` on S3 and
``turok_core.index.memory_store.MemoryIndexStore`` in memory. Both run the same contract suite
(tests/index/test_index_store_contract.py).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from turok_core.index.shards import shard_of, valid_name
from turok_core.runtime.retry import Backoff

# a lost race is retried soon: the other writer is done; the wide jitter splits contenders apart
CONFLICT_BACKOFF = Backoff(base=0.02, cap=2.0, jitter=(0.5, 1.5))


class IndexConflictError(RuntimeError):
    """A shard kept changing under us for every attempt; the caller should retry later."""


@dataclass
class AddStats:
    """What one ``add_names`` call did."""
    names: int = 0  # distinct valid names offered
    added: int = 0  # names that were new to the index
    rejected: int = 0  # names that cannot be indexed (empty, line breaks, empty components)
    shard_writes: int = 0  # successful PUTs
    shards_unchanged: int = 0  # shards that already held every offered name (no PUT)
    conflicts: int = 0  # lost compare-and-swap races, each followed by a retry


@dataclass
class RemoveStats:
    """What one ``remove_names`` call did."""
    names: int = 0  # distinct names offered
    removed: int = 0  # names that were in the index and are not any more
    shard_writes: int = 0
    shards_unchanged: int = 0  # shards holding none of the offered names (no PUT)
    conflicts: int = 0


class ShardedIndexStore(ABC):
    """Adds and removes metric names; safe with any number of concurrent writers on one index.

    Drivers implement ``shard_count``, ``read_shard`` and ``_put_shard``."""

    def __init__(self, max_attempts: int, sleep: Callable[[float], None] = time.sleep) -> None:
        self._max_attempts = max(1, max_attempts)
        self._sleep = sleep

    @abstractmethod
    def shard_count(self) -> int:
        """The index's shard count, fixed by its first writer (which records it)."""

    @abstractmethod
    def read_shard(self, shard: int) -> tuple[set[str], Optional[str]]:
        """The names of one shard and its version (``None`` when the shard does not exist yet)."""

    @abstractmethod
    def _put_shard(self, shard: int, names: set[str], version: Optional[str]) -> bool:
        """Replace the shard's names if its version is still ``version`` (``None``: if it does not
        exist); False when another writer changed it first."""

    def _shard_label(self, shard: int) -> str:
        """How errors name a shard."""
        return str(shard)

    def add_names(self, names: Iterable[str]) -> AddStats:
        """Merge ``names`` into the index: one conditional write per shard that gains a name.

        Raises ``IndexConflictError`` when a shard lost every compare-and-swap attempt; shards
        written before that keep their names (adding is idempotent, so the caller just retries).
        """
        stats = AddStats()
        shards = self.shard_count()
        groups: dict[int, set[str]] = {}
        for name in set(names):
            if not valid_name(name):
                stats.rejected += 1
                continue
            stats.names += 1
            groups.setdefault(shard_of(name, shards), set()).add(name)
        for shard in sorted(groups):
            self._add_to_shard(shard, groups[shard], stats)
        return stats

    def _add_to_shard(self, shard: int, names: set[str], stats: AddStats) -> None:
        added = self._swap_shard(shard, lambda current: current | names, stats)
        if added:
            stats.shard_writes += 1
            stats.added += added
        else:
            stats.shards_unchanged += 1

    def _swap_shard(self, shard: int, change: Callable[[set[str]], set[str]],
                    stats: AddStats | RemoveStats) -> int:
        """Compare-and-swap one shard to ``change(its names)``, re-reading after a lost race.

        Returns how many names changed (0: nothing to write). Conflicts count in
        ``stats.conflicts``; raises ``IndexConflictError`` when every attempt lost."""
        for attempt in range(self._max_attempts):
            current, version = self.read_shard(shard)
            updated = change(current)
            if updated == current:
                return 0
            if self._put_shard(shard, updated, version):
                return len(updated ^ current)
            stats.conflicts += 1
            if attempt + 1 < self._max_attempts:
                self._sleep(CONFLICT_BACKOFF.delay(attempt))
        raise IndexConflictError(f"shard {self._shard_label(shard)} kept changing for {self._max_attempts} attempts")

    def remove_names(self, names: Iterable[str]) -> RemoveStats:
        """Drop ``names`` from the index: one conditional write per shard that held one of them.

        The same compare-and-swap as ``add_names``, so a name another writer adds meanwhile is
        never lost. Raises ``IndexConflictError`` when a shard lost every attempt.
        """
        stats = RemoveStats()
        shards = self.shard_count()
        groups: dict[int, set[str]] = {}
        for name in set(names):
            stats.names += 1
            groups.setdefault(shard_of(name, shards), set()).add(name)
        for shard in sorted(groups):
            self._remove_from_shard(shard, groups[shard], stats)
        return stats

    def _remove_from_shard(self, shard: int, names: set[str], stats: RemoveStats) -> None:
        removed = self._swap_shard(shard, lambda current: current - names, stats)
        if removed:
            stats.shard_writes += 1
            stats.removed += removed
        else:
            stats.shards_unchanged += 1
