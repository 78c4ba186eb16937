"""What the index tests read of a store's shards directly (no reader's copy in between)."""
from __future__ import annotations

from typing import Optional


def read_shard(store, shard: int) -> tuple[set[str], Optional[str]]:
    """The names of one shard of ``store.shard_count()`` shards and its version (``None`` when the
    shard does not exist yet)."""
    found = store.read_object(store.shard_count(), shard)
    return set(found.names), found.version
