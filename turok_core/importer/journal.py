"""The import's journal: which whisper files are imported already, on local disk.

One line per finished file, ``<size>\\t<mtime ns>\\t<path>\\n``, appended and fsynced after the
file's blocks were written and its name announced. A file is done when a complete line names it
with its current size and modification time, so a changed file is imported again (its gaps
filled; stored slots win). A line cut short by a crash (no newline) is ignored: that file is
imported again, and its blocks, already stored, are merged unchanged, so nothing is written
twice.
"""
from __future__ import annotations

import os
from typing import Iterable

FileKey = tuple[str, int, int]  # (absolute path, size, mtime ns)


def file_key(path: str) -> FileKey:
    """The journal's key of the file at ``path`` now."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


class Journal:
    """Finished files, read at start and appended to as files finish."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._done: set[FileKey] = set()
        if os.path.exists(path):
            with open(path, "rb") as handle:
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        continue  # the last line of a run killed while writing it
                    parts = raw[:-1].decode("utf-8", "surrogateescape").split("\t", 2)
                    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                        self._done.add((parts[2], int(parts[0]), int(parts[1])))

    def __contains__(self, key: FileKey) -> bool:
        return key in self._done

    def __len__(self) -> int:
        return len(self._done)

    def record(self, keys: Iterable[FileKey]) -> None:
        """Append ``keys`` as done, durably (fsync) before returning."""
        lines = [f"{size}\t{mtime}\t{path}\n" for path, size, mtime in keys]
        if not lines:
            return
        with open(self.path, "ab") as handle:
            handle.write("".join(lines).encode("utf-8", "surrogateescape"))
            handle.flush()
            os.fsync(handle.fileno())
        for path, size, mtime in keys:
            self._done.add((path, size, mtime))
