"""The index's shard codec: which shard holds a name, and a shard object's bytes.

Names are spread over ``shards`` objects by a stable hash of the whole name (CRC-32), so
announcing one new name rewrites one small shard, and every writer and reader, in any language,
agrees on where a name lives. A shard object is the gzip of its sorted, distinct names, one per
line, with fixed gzip headers: the same names always give the same bytes. A shard *sealed* for a
move to ``M`` shards (``turok_core.index.layout``) has one more line after its names,
``.sealed M``: no indexable name starts with ``.``, and the line changes the object's bytes, so
its ETag too (S3's ETag is the MD5 of the bytes: a seal in metadata would keep the ETag, and a
writer's ``If-Match`` of the names it read before the seal would still succeed).
"""
from __future__ import annotations

import gzip
import zlib
from typing import Iterable, Optional

from turok_core.model.metric_names import TAG_SEPARATOR


def shard_of(name: str, shards: int) -> int:
    """The shard holding ``name``: CRC-32 of its UTF-8 bytes modulo ``shards`` (stable everywhere)."""
    return zlib.crc32(name.encode("utf-8")) % shards


def valid_name(name: str) -> bool:
    """Whether ``name`` can be indexed: non-empty, no line breaks, no empty path component."""
    if not name or "\n" in name or "\r" in name:
        return False
    path = name.split(TAG_SEPARATOR, 1)[0]
    return bool(path) and "" not in path.split(".")


SEAL = ".sealed "  # the seal line's start: no valid name starts with '.'


def encode_shard(names: Iterable[str], sealed_to: Optional[int] = None) -> bytes:
    """A shard object: gzip of the sorted, distinct names, one per line (deterministic bytes),
    then the seal line when ``sealed_to`` is given."""
    ordered = sorted(set(names))
    text = "".join(name + "\n" for name in ordered)
    if sealed_to is not None:
        text += f"{SEAL}{sealed_to}\n"
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def decode_shard_object(data: bytes) -> tuple[list[str], Optional[int]]:
    """The names in a shard object (``encode_shard``'s output) and the layout it is sealed for."""
    if not data:
        return [], None
    names = gzip.decompress(data).decode("utf-8").split("\n")
    if names[-1] == "":
        names.pop()  # after the last name's line break
    sealed_to = None
    if names and names[-1].startswith(SEAL):
        sealed_to = int(names.pop()[len(SEAL):])
    if "" in names:  # blank lines: not ours, but harmless
        names = [name for name in names if name]
    return names, sealed_to
