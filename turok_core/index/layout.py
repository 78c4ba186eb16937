"""An index's layouts: the manifest naming them, a shard object as read, and the names readers see.

The manifest says which layout holds the names: ``{"version": 1, "shards": N}``, and while the
index moves to more shards ``{"version": 1, "shards": N, "moving_to": M}`` (M a multiple of N, so
new shard ``j`` takes its names from old shard ``j % N`` alone: ``crc % M % N == crc % N``). It
only ever changes by compare-and-swap, and each change raises ``shards`` or sets ``moving_to``,
so it never comes back to a state it left: a version read twice unchanged means no move started or
finished in between.

During a move an old shard is *open* (its names are its range's, no new shard of that range
exists yet) or *sealed* (its names are frozen; the range's names are each new shard's that
exists, and for a new shard not created yet, the sealed names that hash to it: what its first
writer puts in it). ``view_units`` is that rule, shared by every reader (``turok_core.index.s3_cache``)
and the tests; ``turok_core.index.store`` and ``turok_core.index.reshard`` are the writers' side.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from typing import Collection, Mapping, NamedTuple, Optional, Sequence

from turok_core.index.shards import shard_of

MANIFEST_VERSION = 1


class IndexFormatError(ValueError):
    """The manifest or a shard object is not one Turok wrote."""


@dataclass(frozen=True)
class Manifest:
    """Which layout holds the index: ``shards``, and while it moves, ``moving_to``."""
    shards: int
    moving_to: Optional[int] = None

    def __post_init__(self) -> None:
        if self.shards < 1 or (self.moving_to is not None and (
                self.moving_to <= self.shards or self.moving_to % self.shards)):
            raise IndexFormatError(f"unsupported index manifest {self!r}")

    def encode(self) -> bytes:
        fields: dict = {"version": MANIFEST_VERSION, "shards": self.shards}
        if self.moving_to is not None:
            fields["moving_to"] = self.moving_to
        return json.dumps(fields).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> Manifest:
        """The manifest in a manifest object's bytes."""
        try:
            fields = json.loads(body)
            shards = int(fields["shards"])
            moving_to = fields.get("moving_to")
            moving_to = None if moving_to is None else int(moving_to)
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(f"index manifest is not valid: {exc}") from None
        if fields.get("version") != MANIFEST_VERSION:
            raise IndexFormatError(f"unsupported index manifest {fields!r}")
        return cls(shards, moving_to)

    @property
    def layouts(self) -> tuple[int, ...]:
        """The shard counts whose objects hold names now (the old one first)."""
        return (self.shards,) if self.moving_to is None else (self.shards, self.moving_to)


class ShardObject(NamedTuple):
    """One shard object as read: its names, the layout it is sealed for (None: open) and its
    version (None: the object does not exist)."""
    names: Collection[str]
    sealed_to: Optional[int]
    version: Optional[str]


MISSING = ShardObject((), None, None)


def new_shards_of(shard: int, old: int, new: int) -> range:
    """The shards of layout ``new`` that take their names from shard ``shard`` of layout ``old``."""
    return range(shard, new, old)


def view_units(manifest: Optional[Manifest],
               objects: Mapping[tuple[int, int], ShardObject]) -> dict[int, Sequence[str]]:
    """The names a reader answers from, by shard of ``manifest.shards`` (a missing unit: none).

    ``objects`` holds every object the reader found, by (layout, shard): each old shard read
    before the new shards of its range, so an open old shard's names are a state its range had
    (no new shard of it existed then) and a sealed one's stand for its new shards not created
    when they were read. A name removed before the read never shows: a removal during a move
    goes to the open old shard, or to the new shard, created from the sealed names first."""
    if manifest is None:
        return {}
    old = manifest.shards
    units: dict[int, Sequence[str]] = {}
    for shard in range(old):
        found = objects.get((old, shard), MISSING)
        if manifest.moving_to is None or (found.version is not None and found.sealed_to is None):
            if found.version is not None:
                units[shard] = list(found.names) if not isinstance(found.names, list) else found.names
            continue
        new = manifest.moving_to
        parts: list[Collection[str]] = []
        unfilled: set[int] = set()
        for target in new_shards_of(shard, old, new):
            filled = objects.get((new, target), MISSING)
            if filled.version is not None:
                parts.append(filled.names)
            else:
                unfilled.add(target)
        if unfilled and found.version is not None:  # sealed: what the new shard's first writer puts in it
            parts.append([name for name in found.names if shard_of(name, new) in unfilled])
        units[shard] = list(chain.from_iterable(parts))
    return units
