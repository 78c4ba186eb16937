"""A whisper file read whole and checked: its header, and each archive as a column of slot values.

The format (whisper 1.1, what carbon writes): a header ``!2LfL`` (aggregation type, max
retention, xFilesFactor, archive count), one ``!3L`` entry per archive (offset, seconds per
point, points), then each archive as a ring of ``!Ld`` (timestamp, value) points. A slot is
known only when its stored timestamp is the one its position stands for in the window whisper
would show (``archive_window``): whisper's ``fetch`` applies the same test, so a stale point from
an earlier turn of the ring is not read. NaN values are gaps (Turok's blocks store them as gaps).

Anything else (too short, inconsistent offsets, a size that is not the header's, steps that do
not divide each other) raises ``WhisperFileError`` with the reason; nothing here writes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import chain, islice
from typing import Optional

METADATA = struct.Struct("!2LfL")
ARCHIVE_INFO = struct.Struct("!3L")
POINT_SIZE = struct.calcsize("!Ld")
MAX_ARCHIVES = 64  # whisper has no limit; carbon configurations have a handful
# whisper's aggregation types (whisper.aggregationTypeToMethod)
WHISPER_AGGREGATIONS = {1: "average", 2: "sum", 3: "last", 4: "max", 5: "min", 6: "avg_zero",
                        7: "absmax", 8: "absmin"}


class WhisperFileError(ValueError):
    """Not a readable whisper file; the message is the reason."""


@dataclass(frozen=True)
class WhisperArchive:
    offset: int
    step: int  # seconds per point
    points: int

    @property
    def retention(self) -> int:
        return self.step * self.points

    @property
    def size(self) -> int:
        return self.points * POINT_SIZE


@dataclass(frozen=True)
class WhisperHeader:
    aggregation: str  # whisper's name (average, sum, last, max, min, avg_zero, absmax, absmin)
    max_retention: int
    x_files_factor: float
    archives: tuple[WhisperArchive, ...]

    @property
    def file_size(self) -> int:
        return METADATA.size + ARCHIVE_INFO.size * len(self.archives) + sum(a.size for a in self.archives)


def parse_header(data: bytes) -> WhisperHeader:
    """The header at the start of ``data`` (the file's first bytes, or all of it), checked."""
    if len(data) < METADATA.size:
        raise WhisperFileError(f"too short for a whisper header ({len(data)} bytes)")
    aggregation_type, max_retention, xff, count = METADATA.unpack_from(data)
    if aggregation_type not in WHISPER_AGGREGATIONS:
        raise WhisperFileError(f"not a whisper file: unknown aggregation type {aggregation_type}")
    if not 0.0 <= xff <= 1.0:  # also refuses NaN
        raise WhisperFileError(f"not a whisper file: xFilesFactor {xff} is not in [0, 1]")
    if not 1 <= count <= MAX_ARCHIVES:
        raise WhisperFileError(f"not a whisper file: {count} archives")
    header_end = METADATA.size + ARCHIVE_INFO.size * count
    if len(data) < header_end:
        raise WhisperFileError(f"truncated: {len(data)} bytes, the header of {count} archives needs {header_end}")
    archives: list[WhisperArchive] = []
    offset = header_end
    for index in range(count):
        archive = WhisperArchive(*ARCHIVE_INFO.unpack_from(data, METADATA.size + index * ARCHIVE_INFO.size))
        if archive.offset != offset:
            raise WhisperFileError(f"archive {index} at offset {archive.offset}, expected {offset}")
        if archive.step < 1 or archive.points < 1:
            raise WhisperFileError(f"archive {index} has {archive.step}s steps and {archive.points} points")
        if archives and (archive.step <= archives[-1].step or archive.step % archives[-1].step):
            raise WhisperFileError(f"archive {index}: {archive.step}s after {archives[-1].step}s")
        archives.append(archive)
        offset += archive.size
    if max_retention != archives[-1].retention:
        raise WhisperFileError(f"max retention {max_retention}s is not the last archive's {archives[-1].retention}s")
    return WhisperHeader(WHISPER_AGGREGATIONS[aggregation_type], max_retention, float(xff), tuple(archives))


def read_whisper(path: str) -> tuple[WhisperHeader, bytes]:
    """The checked header and the whole content of the file at ``path``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise WhisperFileError(f"cannot read: {exc.strerror or exc}") from None
    header = parse_header(data)
    if len(data) != header.file_size:
        what = "truncated" if len(data) < header.file_size else "longer than its header says"
        raise WhisperFileError(f"{what}: {len(data)} bytes, the header says {header.file_size}")
    return header, data


def read_header(path: str) -> WhisperHeader:
    """The checked header of the file at ``path``, reading only the header's bytes."""
    with open(path, "rb") as handle:
        head = handle.read(METADATA.size)
        if len(head) == METADATA.size:
            head += handle.read(ARCHIVE_INFO.size * min(METADATA.unpack(head)[3], MAX_ARCHIVES))
    return parse_header(head)


_CHUNK_POINTS = 1024
_CHUNK = struct.Struct("!" + "Ld" * _CHUNK_POINTS)


def _unpack(data: bytes, offset: int, points: int) -> tuple[list[int], list[float]]:
    """The timestamps and values of ``points`` points from ``offset``, unpacked a chunk at a time
    (one compiled format of a whole archive would cost more memory than the archive's values)."""
    stamps: list[int] = []
    values: list[float] = []
    full, rest = divmod(points, _CHUNK_POINTS)
    for index in range(full):
        chunk = _CHUNK.unpack_from(data, offset + index * _CHUNK.size)
        stamps += chunk[0::2]
        values += chunk[1::2]
    if rest:
        chunk = struct.unpack_from("!" + "Ld" * rest, data, offset + full * _CHUNK.size)
        stamps += chunk[0::2]
        values += chunk[1::2]
    return stamps, values


def archive_window(archive: WhisperArchive, now: int) -> tuple[int, int]:
    """``[first, end)`` slot starts of ``archive`` that ``whisper.fetch`` shows at time ``now``
    (``points`` slots ending with the one holding ``now``)."""
    end = now - now % archive.step + archive.step
    return end - archive.retention, end


def archive_values(data: bytes, archive: WhisperArchive, now: int) -> tuple[int, list[Optional[float]]]:
    """``(first slot start, values)``: the archive's slots in its window at ``now``, None for gaps."""
    first, end = archive_window(archive, now)
    points = archive.points
    base = struct.unpack_from("!L", data, archive.offset)[0]
    if base == 0:  # whisper: an archive whose first point was never written is empty
        return first, [None] * points
    stamps, values = _unpack(data, archive.offset, points)
    # read the ring from the position of the window's first slot, keeping the slots whose stored
    # timestamp is the one expected there (whisper.fetch's test); v == v is False for NaN: a gap
    turn = ((first - base) // archive.step) % points
    ring = zip(chain(islice(stamps, turn, None), islice(stamps, turn)), range(first, end, archive.step),
               chain(islice(values, turn, None), islice(values, turn)))
    return first, [value if stamp == expected and value == value else None for stamp, expected, value in ring]
