"""The tag index: tagged series in their own sharded index, and the TagDB's local copy of it.

The tag index is the name index's machinery on its own prefix and shard count
(``config.tag_index_prefix``, ``config.tag_index_shards``, in ``config.index_bucket``): the
indexer adds every tagged name it is told to both indexes, the keeper's hygiene removes dead ones
from both, with the same compare-and-swap (``turok_core.index.store``), so two indexers lose
nothing and one new series rewrites one shard. A reader (``TagCache``) keeps a copy revalidated
by ETag like the finder's and answers from one ``TagIndex``, which inverts the series by tag and
value on the reader's side; a revalidation that finds some shards changed updates that
``TagIndex`` with those shards' removed and added series only (``TagIndex.updated``).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

from turok_core.index.s3_cache import ShardCache
from turok_core.index.s3_store import IndexStore
from turok_core.index.tag_index import TagIndex
from turok_core.model.config import TurokConfig
from turok_core.model.metric_names import TAG_SEPARATOR
from turok_core.runtime.aws import AwsClient


def tag_index_config(config: TurokConfig) -> TurokConfig:
    """``config`` as the index classes see it for the tag index (its prefix, shard count and
    shard size target)."""
    return config.replace(index_prefix=config.tag_index_prefix, index_shards=config.tag_index_shards,
                          index_shard_target_names=config.tag_index_shard_target_names)


def tagged(names: Iterable[str]) -> list[str]:
    """The tagged names among ``names`` (what belongs in the tag index)."""
    return [name for name in names if TAG_SEPARATOR in name]


def make_tag_store(client: AwsClient, config: TurokConfig, max_attempts: Optional[int] = None,
                   sleep: Callable[[float], None] = time.sleep) -> IndexStore:
    """The tag index's writer on S3."""
    return IndexStore(client, tag_index_config(config), max_attempts, sleep)


class TagCache(ShardCache[TagIndex]):
    """graphite-web's TagDB copy of the tag index: ``tag_index`` answers from one ``TagIndex``."""

    def __init__(self, client: AwsClient, config: TurokConfig, clock: Callable[[], float] = time.monotonic,
                 parallelism: int = 8) -> None:
        super().__init__(client, tag_index_config(config), clock, parallelism)

    def _build(self, names: Iterable[str]) -> TagIndex:
        return TagIndex(names, from_tag_index=True)

    def _update(self, current: TagIndex, changes: list[tuple[list[str], list[str]]]) -> Optional[TagIndex]:
        removed: list[str] = []
        added: list[str] = []
        for old, new in changes:  # a shard's versions mostly share their series: only the difference moves
            kept, now = set(old), set(new)
            removed.extend(name for name in old if name not in now)
            added.extend(name for name in new if name not in kept)
        return current.updated(removed, added)

    @property
    def tag_index(self) -> TagIndex:
        """The current tag index, refreshed first when the refresh period has passed."""
        return self.current
