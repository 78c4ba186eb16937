"""Moving an index to more shards while indexers keep writing (``move_shards``), and when to.

The protocol, safe without clocks (docs/tags.md, "Growing the shard count"), every step a
compare-and-swap or a create-if-absent on one object:

1. start: the manifest ``{shards: N}`` becomes ``{shards: N, moving_to: M}`` (M a multiple of
   N). A mover that finds a move in progress joins it.
2. for each old shard: *seal* it (its names and the seal line, ``If-Match`` on what was read; a
   missing one is created sealed and empty). A writer that read the shard before fails its own
   compare-and-swap, re-reads, sees the seal and writes the new layout from then on. Then create
   each of its new shards that does not exist yet with the sealed names that hash to it
   (``If-None-Match: *``): a writer that created it first put those same names in, with its
   change, so a name removed there never comes back.
3. switch: the manifest becomes ``{shards: M}`` (``If-Match``).
4. delete the old layout, and any older one left by a mover killed after its switch.

Every step is idempotent: several movers at once take the same steps, and a move a mover left
half done is finished by the next one (an indexer at its start or after any batch, or
``python -m turok_core.index.reshard`` by hand; the keeper's hygiene writes during a move but
never moves). Writers and readers
need nothing from the movers but the manifest and the seals (``turok_core.index.store``,
``turok_core.index.layout``).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Collection, Optional, Sequence

from turok_core.index.layout import IndexFormatError, Manifest, new_shards_of
from turok_core.index.store import CONFLICT_BACKOFF, AddStats, IndexConflictError, ShardedIndexStore, sealed_part

GROWTH = 4  # a move multiplies the shard count by this


@dataclass
class MoveStats:
    """What one ``move_shards`` call did."""
    moved_from: int = 0  # the old shard count (0: no move)
    moved_to: int = 0
    sealed: int = 0  # old shards this call sealed (the others were sealed by another mover)
    filled: int = 0  # new shards this call created
    conflicts: int = 0  # lost compare-and-swap races, each followed by a retry
    deleted: int = 0  # objects of retired layouts deleted
    seconds: float = 0.0


def move_due(store: ShardedIndexStore, stats: AddStats, target_names: int) -> Optional[int]:
    """The shard count to move to after an ``add_names`` that gave ``stats``, or None: the move
    in progress, else ``GROWTH`` times the shards when the shards it wrote hold more than
    ``target_names`` names on average (0: never)."""
    manifest = store.manifest()
    if manifest.moving_to is not None:
        return manifest.moving_to
    if target_names > 0 and stats.mean_shard_names > target_names:
        return manifest.shards * GROWTH
    return None


def move_shards(store: ShardedIndexStore, to: Optional[int] = None, delete: bool = True,
                sleep: Callable[[float], None] = time.sleep) -> MoveStats:
    """Finish the move in progress, or start one to ``to`` shards and finish it; then (``delete``)
    delete the layouts older than the manifest's. ``ValueError`` for a ``to`` that is no multiple
    of the current count; ``IndexConflictError`` when an object kept changing (call again)."""
    started = time.monotonic()
    stats = MoveStats()
    manifest = store.manifest(fresh=True)
    if manifest.moving_to is None and to is not None and to != manifest.shards:
        manifest = _start(store, to, stats, sleep)
    if manifest.moving_to is not None:
        old, new = manifest.shards, manifest.moving_to
        stats.moved_from, stats.moved_to = old, new
        for shard in range(old):
            sealed = _seal(store, old, new, shard, stats, sleep)
            for target in new_shards_of(shard, old, new):
                if store.read_object(new, target).version is None \
                        and store.put_object(new, target, sealed_part(sealed, new, target), None, None):
                    stats.filled += 1
        _switch(store, old, new, stats, sleep)
    if delete:
        current = store.manifest(fresh=True).shards
        for layout in store.layouts():
            if layout < current:  # retired; a later move's layout is larger, never touched
                stats.deleted += store.delete_layout(layout)
    stats.seconds = time.monotonic() - started
    return stats


def _retry(store: ShardedIndexStore, attempt: int, stats: MoveStats, sleep: Callable[[float], None],
           what: str) -> None:
    stats.conflicts += 1
    if attempt + 1 >= store.max_attempts:
        raise IndexConflictError(f"{what} kept changing for {store.max_attempts} attempts")
    sleep(CONFLICT_BACKOFF.delay(attempt))


def _start(store: ShardedIndexStore, to: int, stats: MoveStats, sleep: Callable[[float], None]) -> Manifest:
    for attempt in range(store.max_attempts):
        manifest, version = store.manifest_state(fresh=True)
        if manifest.moving_to is not None or to <= manifest.shards:
            return manifest  # a move in progress (joined), or done already
        if to % manifest.shards:
            raise ValueError(f"cannot move {manifest.shards} shards to {to}: not a multiple")
        if store.put_manifest(Manifest(manifest.shards, to), version):
            return store.manifest(fresh=True)
        _retry(store, attempt, stats, sleep, "the index manifest")
    raise AssertionError("unreachable")


def _seal(store: ShardedIndexStore, old: int, new: int, shard: int, stats: MoveStats,
          sleep: Callable[[float], None]) -> Collection[str]:
    """Seal shard ``shard`` of ``old`` for ``new``; its (frozen) names."""
    for attempt in range(store.max_attempts):
        found = store.read_object(old, shard)
        if found.sealed_to == new:
            return found.names
        if found.sealed_to is not None:
            raise IndexFormatError(f"shard {store.shard_label(old, shard)} is sealed for {found.sealed_to} "
                                   f"shards, the manifest moves to {new}")
        if store.put_object(old, shard, found.names, new, found.version):
            stats.sealed += 1
            return found.names
        _retry(store, attempt, stats, sleep, f"shard {store.shard_label(old, shard)}")
    raise AssertionError("unreachable")


def _switch(store: ShardedIndexStore, old: int, new: int, stats: MoveStats, sleep: Callable[[float], None]) -> None:
    for attempt in range(store.max_attempts):
        manifest, version = store.manifest_state(fresh=True)
        if manifest.shards >= new:
            return  # another mover switched
        if manifest != Manifest(old, new):
            raise IndexFormatError(f"the index manifest changed to {manifest} during a move from {old} to {new}")
        if store.put_manifest(Manifest(new), version):
            store.manifest(fresh=True)
            return
        _retry(store, attempt, stats, sleep, "the index manifest")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m turok_core.index.reshard [--tags] [--to M] [--config FILE]``: move by hand."""
    from turok_core.index.s3_store import IndexStore
    from turok_core.index.tag_cache import make_tag_store
    from turok_core.model.config import load_config
    from turok_core.runtime.aws import make_client

    parser = argparse.ArgumentParser(prog="python -m turok_core.index.reshard", description=(
        "Move the S3 name index (or with --tags the tag index) to more shards while indexers keep "
        "writing; without --to, finish a move left half done and delete retired layouts."))
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="Turok configuration file (default: $TUROK_CONFIG; TUROK_* variables override)")
    parser.add_argument("--tags", action="store_true", help="the tag index instead of the name index")
    parser.add_argument("--to", type=int, default=None, metavar="M",
                        help=f"the new shard count, a multiple of the current one (e.g. {GROWTH}×)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    client = make_client("s3", config)
    store = make_tag_store(client, config) if args.tags else IndexStore(client, config)
    try:
        stats = move_shards(store, args.to)
    except (ValueError, IndexConflictError) as exc:
        print(f"reshard: {exc}", file=sys.stderr)
        return 1
    print(f"reshard: {asdict(stats)}; the index now has {store.manifest().shards} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
