"""The index store in memory: ``IndexStore``'s interface and semantics without S3.

``MemoryIndex`` is what the bucket is to S3 stores: the shared state several writers work on (the
manifest, and each layout's shard objects with a version that changes on every write).
``MemoryIndexStore`` is one writer on it, with the compare-and-swap of
``turok_core.index.store`` against those versions, so concurrent writers (threads) race, retry
and move the index to more shards exactly as on S3. For tests, benchmarks and tools that need an
index without AWS.
"""
from __future__ import annotations

import threading
import time
from itertools import count
from typing import Callable, Collection, Optional

from turok_core.index.layout import MISSING, Manifest, ShardObject
from turok_core.index.store import ShardedIndexStore
from turok_core.model.config import TurokConfig


class MemoryIndex:
    """An index's state in memory, shared by every ``MemoryIndexStore`` made on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.manifest: Optional[tuple[Manifest, str]] = None  # (manifest, version)
        self.objects: dict[tuple[int, int], ShardObject] = {}  # (layout, shard): frozen names, seal, version
        self._versions = count(1)

    def next_version(self) -> str:
        """A version no object has had (an ETag's stand-in)."""
        return f'"{next(self._versions)}"'


class MemoryIndexStore(ShardedIndexStore):
    """Adds and removes metric names in a ``MemoryIndex``; safe with concurrent writers."""

    def __init__(self, config: Optional[TurokConfig] = None, index: Optional[MemoryIndex] = None,
                 max_attempts: Optional[int] = None, sleep: Callable[[float], None] = time.sleep) -> None:
        config = config if config is not None else TurokConfig()
        super().__init__(config.index_shards, max_attempts or config.write_max_attempts, sleep)
        self.index = index if index is not None else MemoryIndex()

    def _read_manifest(self, known: Optional[str]) -> Optional[tuple[Optional[Manifest], Optional[str]]]:
        with self.index.lock:
            stored = self.index.manifest
        if stored is None:
            return None, None
        return None if stored[1] == known else stored

    def put_manifest(self, manifest: Manifest, version: Optional[str]) -> bool:
        index = self.index
        with index.lock:
            if (index.manifest[1] if index.manifest else None) != version:
                return False
            index.manifest = (manifest, index.next_version())
            return True

    def read_object(self, shards: int, shard: int) -> ShardObject:
        with self.index.lock:
            return self.index.objects.get((shards, shard), MISSING)

    def put_object(self, shards: int, shard: int, names: Collection[str], sealed_to: Optional[int],
                   version: Optional[str]) -> Optional[str]:
        index = self.index
        with index.lock:
            if index.objects.get((shards, shard), MISSING).version != version:
                return None
            written = index.next_version()
            index.objects[(shards, shard)] = ShardObject(frozenset(names), sealed_to, written)
            return written

    def list_versions(self, shards: int) -> Optional[dict[int, str]]:
        with self.index.lock:
            return {shard: found.version for (layout, shard), found in self.index.objects.items()
                    if layout == shards and found.version is not None}

    def layouts(self) -> list[int]:
        with self.index.lock:
            return sorted({layout for layout, _ in self.index.objects})

    def delete_layout(self, shards: int) -> int:
        with self.index.lock:
            keys = [key for key in self.index.objects if key[0] == shards]
            for key in keys:
                del self.index.objects[key]
        return len(keys)
