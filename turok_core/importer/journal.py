"""The import's journal: which whisper files are imported already, on local disk.

One line per finished file, ``<size>\\t<mtime ns>\\t<path>\\n``, appended and fsynced after the
file's blocks were written and its name announced. A file is done when a complete line names it
with its current size and modification time, so a changed file is imported again (its gaps
filled; stored slots win). A line cut short by a crash (no newline) is ignored: that file is
imported again, and its blocks, already stored, are merged unchanged, so nothing is written
twice.

In memory the journal read at start is a sorted array of 8-byte hashes of its lines (8 MB for a
million files); what this run records only goes to the file, since a run meets each file once.
"""
from __future__ import annotations

import os
from array import array
from bisect import bisect_left
from hashlib import blake2b
from typing import Iterable

FileKey = tuple[str, int, int]  # (absolute path, size, mtime ns)


def file_key(path: str) -> FileKey:
    """The journal's key of the file at ``path`` now."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def _line(key: FileKey) -> bytes:
    path, size, mtime = key
    return f"{size}\t{mtime}\t{path}\n".encode("utf-8", "surrogateescape")


def _hash(line: bytes) -> int:
    return int.from_bytes(blake2b(line, digest_size=8).digest(), "big")


class Journal:
    """Files finished by earlier runs (read at start), and appending the files this run finishes."""

    def __init__(self, path: str) -> None:
        self.path = path
        hashes = []
        if os.path.exists(path):
            with open(path, "rb") as handle:
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        continue  # the last line of a run killed while writing it
                    parts = raw.split(b"\t", 2)
                    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                        hashes.append(_hash(raw))
        self._done = array("Q", sorted(set(hashes)))

    def __contains__(self, key: FileKey) -> bool:
        wanted = _hash(_line(key))
        index = bisect_left(self._done, wanted)
        return index < len(self._done) and self._done[index] == wanted

    def __len__(self) -> int:
        """Files finished before this journal was read."""
        return len(self._done)

    def record(self, keys: Iterable[FileKey]) -> None:
        """Append ``keys`` as done, durably (fsync) before returning."""
        lines = b"".join(_line(key) for key in keys)
        if not lines:
            return
        with open(self.path, "ab") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
