"""The index store in memory: ``IndexStore``'s interface and semantics without S3.

``MemoryIndex`` is what the bucket is to S3 stores: the shared state several writers work on (the
shard count, fixed by the first writer, and each shard's names with a version that changes on
every write). ``MemoryIndexStore`` is one writer on it, with the compare-and-swap of
``turok_core.index.store`` against those versions, so concurrent writers (threads) race and retry
exactly as on S3. For tests, benchmarks and tools that need an index without AWS.
"""
from __future__ import annotations

import threading
import time
from itertools import count
from typing import Callable, Optional

from turok_core.index.store import ShardedIndexStore
from turok_core.model.config import TurokConfig


class MemoryIndex:
    """An index's state in memory, shared by every ``MemoryIndexStore`` made on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shards: Optional[int] = None  # the manifest: set once, by the first writer
        self.objects: dict[int, tuple[frozenset[str], str]] = {}  # shard: (names, version)
        self._versions = count(1)

    def next_version(self) -> str:
        """A version no shard has had (an ETag's stand-in)."""
        return f'"{next(self._versions)}"'


class MemoryIndexStore(ShardedIndexStore):
    """Adds and removes metric names in a ``MemoryIndex``; safe with concurrent writers."""

    def __init__(self, config: Optional[TurokConfig] = None, index: Optional[MemoryIndex] = None,
                 max_attempts: Optional[int] = None, sleep: Callable[[float], None] = time.sleep) -> None:
        config = config if config is not None else TurokConfig()
        super().__init__(max_attempts or config.write_max_attempts, sleep)
        self.index = index if index is not None else MemoryIndex()
        self._configured_shards = config.index_shards

    def shard_count(self) -> int:
        """The index's shard count: the first writer's ``index_shards``."""
        index = self.index
        with index.lock:
            if index.shards is None:
                index.shards = self._configured_shards
            return index.shards

    def read_shard(self, shard: int) -> tuple[set[str], Optional[str]]:
        """The names of one shard and its version (``None`` when the shard does not exist yet)."""
        with self.index.lock:
            stored = self.index.objects.get(shard)
        return (set(stored[0]), stored[1]) if stored is not None else (set(), None)

    def _put_shard(self, shard: int, names: set[str], version: Optional[str]) -> bool:
        index = self.index
        with index.lock:
            stored = index.objects.get(shard)
            if (stored[1] if stored else None) != version:
                return False
            index.objects[shard] = (frozenset(names), index.next_version())
            return True
