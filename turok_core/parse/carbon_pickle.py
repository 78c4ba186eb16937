"""Carbon's pickle protocol: length-prefixed frames, unpickled without ever running code.

A frame is a 4-byte big-endian length, then a pickle (protocol 0 to 5) of
``[(path, (timestamp, value)), ...]``. ``FrameReader`` cuts a TCP byte stream into frames and
refuses a frame longer than the limit as soon as its length prefix is read, so the body of an
oversized frame is never buffered. ``decode_frames`` unpickles the frames of one read and turns
all their points, as one batch, into the parallel lists of ``ParsedLines``
(``turok_core.parse.batch``) that the gateway's windows take, with the plaintext protocol's rules
(``turok_core.parse.plaintext``): ``-1`` means now, float timestamps are truncated, NaN values
are dropped (counted), infinite values, timestamps ``<= 0`` or past year 9999, paths that are not
text or UTF-8 bytes or are longer than the limit are bad points, and every path goes through
Turok's metric-name rule (``turok_core.model.metric_names``: normalised, or refused as a bad point).

Unpickling: ``SafeUnpickler`` has no way to reach a class or a function. ``find_class`` and
``persistent_load`` always raise, and the opcodes that load or call something (GLOBAL,
STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4, PERSID, BINPERSID) raise
``UnsafePickleError`` the moment they are met, before anything is looked up. It is the
pure-Python unpickler on purpose: the C one (``_pickle``) sizes its memo array from the index a
PUT / LONG_BINPUT opcode names, so a 9-byte pickle naming index 2**30 makes it allocate and zero
gigabytes; the Python one keeps its memo in a dict. Its cost is ~65 ms per MB of pickle, a few
microseconds per point. So when the C extension is built (``turok_core.parse.native``), a frame first
goes through ``pickle_is_plain``, a C walk over its opcodes that passes only plain-data opcodes
(no GLOBAL, REDUCE, … and no dicts or sets) whose memo indices are below the frame's length; such
a frame is loaded by the C unpickler (~15× faster), any other by ``SafeUnpickler``, which also
decides what is unsafe or malformed. Likewise the points of clean frames become the parallel
lists in one C call (``pickle_columns``); anything unusual goes through the Python decoder.

Behaviour, as carbon's receiver except for code: a frame that does not unpickle, or is not a
list (or tuple) of points, is a bad frame, skipped, and the connection stays open; a point of the
wrong shape or type is a bad point. A frame trying to run code is refused (``PickleBatch.unsafe``)
and its sender should be disconnected; nothing after it in the same read is decoded.
"""
from __future__ import annotations

import io
import math
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from turok_core.model.metric_names import NameRule
from turok_core.parse.batch import MAX_TIMESTAMP, ParsedLines
from turok_core.parse.native import speedups as _native

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 1 << 20  # carbon's PICKLE_RECEIVER_MAX_LENGTH
# opcodes that import a name, call something, or hand an id to the application
CODE_OPCODES = ("GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX",
                "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID")
_NUMBER_TYPES = {int, float}
_EXAMPLE_CHARS = 80
# what a pickle held: anything, told apart by exact type (type(x) is int, so no bool passes for
# an int), which mypy does not narrow from type(x) in (…)
Unpickled = Any


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle tries to load a class, call a function or use a persistent id."""


class MalformedPickleError(ValueError):
    """The frame is not a pickle this unpickler can read (garbage, truncated, unknown opcode…)."""


def _refuse(opcode: str) -> Callable[[pickle._Unpickler], None]:
    def refuse(unpickler: pickle._Unpickler) -> None:
        raise UnsafePickleError(f"{opcode} opcode: the pickle tries to load a class or call a function")
    return refuse


class SafeUnpickler(pickle._Unpickler):
    """A pickle.Unpickler (the pure-Python one, see the module notes) that builds plain data only.

    Byte strings of Python 2 pickles stay ``bytes`` (``encoding="bytes"``)."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch.update({getattr(pickle, name)[0]: _refuse(name) for name in CODE_OPCODES})

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")

    def find_class(self, module, name):
        raise UnsafePickleError(f"refused to load {str(module)[:60]}.{str(name)[:60]}")

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id")


def load_frame(frame: bytes) -> Unpickled:
    """Unpickle one frame's body; raises UnsafePickleError or MalformedPickleError."""
    try:
        if _native is not None and _native.pickle_is_plain(frame):
            return pickle.loads(frame, encoding="bytes")  # plain data, bounded memo: see above
        return SafeUnpickler(frame).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # pickle raises a wide range of errors on garbage
        raise MalformedPickleError(f"{type(exc).__name__}: {str(exc)[:120]}") from None


class FrameReader:
    """Cuts a byte stream into frame bodies, refusing oversized frames before their body arrives.

    After a length prefix over ``max_frame_bytes``, ``oversize`` holds that length, the buffer is
    dropped and every later ``feed`` returns nothing: the caller should close the connection.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.oversize = 0
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete (a truncated frame if the stream ends now)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The bodies of the frames completed by ``data``, in order."""
        if self.oversize:
            return []
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset, size = 0, len(buffer)
        while size - offset >= 4:
            (length,) = HEADER.unpack_from(buffer, offset)
            if length > self.max_frame_bytes:
                self.oversize = length
                self._buffer = bytearray()
                return frames
            end = offset + 4 + length
            if end > size:
                break
            frames.append(bytes(buffer[offset + 4:end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames


@dataclass
class PickleBatch:
    """What the frames of one read held."""
    parsed: ParsedLines = field(default_factory=ParsedLines)  # good points and bad-point counts
    frames: int = 0  # frames decoded (good or bad), not counting a refused one
    bad_frames: int = 0  # not a pickle, or not a list of points: skipped, as carbon does
    bad_frame_example: str = ""
    unsafe: str = ""  # why a frame was refused as trying to run code; empty when none was


def decode_frames(frames: Iterable[bytes], now: float, max_path_bytes: int = 0,
                  rule: Optional[NameRule] = None) -> PickleBatch:
    """Unpickle frame bodies and decode all their points as one batch.

    Stops at the first frame that tries to run code (``unsafe`` says why); the points of the
    frames before it are kept. ``max_path_bytes`` > 0 makes longer paths bad points; ``rule``
    is the metric-name rule (default: its default limits)."""
    batch = PickleBatch()
    points: list = []
    for frame in frames:
        try:
            loaded = load_frame(frame)
        except UnsafePickleError as exc:
            batch.unsafe = str(exc)
            break
        except MalformedPickleError as exc:
            batch.frames += 1
            batch.bad_frames += 1
            batch.bad_frame_example = batch.bad_frame_example or f"{len(frame)}-byte frame: {exc}"
            continue
        batch.frames += 1
        if type(loaded) not in (list, tuple):
            batch.bad_frames += 1
            batch.bad_frame_example = batch.bad_frame_example or f"a pickled {_describe(loaded)}, not a list"
            continue
        points.extend(loaded)
    batch.parsed = decode_points(points, now, max_path_bytes, rule)
    return batch


def decode_points(points: Sequence, now: float, max_path_bytes: int = 0,
                  rule: Optional[NameRule] = None) -> ParsedLines:
    """``(path, (timestamp, value))`` items to parallel lists, with the plaintext rules."""
    rule = rule or NameRule()
    if _native is not None and type(points) is list:
        columns = _native.pickle_columns(points, int(now), max_path_bytes, rule.max_bytes)
        if columns is not None:
            return ParsedLines(*columns)
    parsed = _decode_fast(points, int(now), max_path_bytes, rule)
    return parsed if parsed is not None else _decode_slow(points, int(now), max_path_bytes, rule)


def _decode_fast(points: Sequence, now: int, max_path_bytes: int, rule: NameRule) -> Optional[ParsedLines]:
    """All points at once with C-level operations, or None when any point needs a closer look."""
    if not points:
        return ParsedLines()
    try:
        paths, pairs = zip(*points, strict=True)
        stamps, raw_values = zip(*pairs, strict=True)
    except (TypeError, ValueError):  # not all pairs of pairs
        return None
    path_types = set(map(type, paths))
    if not set(map(type, stamps)) <= _NUMBER_TYPES or not set(map(type, raw_values)) <= _NUMBER_TYPES:
        return None
    try:
        if path_types == {str}:
            joined = "\n".join(paths).encode("utf-8")
            names = list(paths)
        elif path_types == {bytes}:
            joined = b"\n".join(paths)
            names = joined.decode("utf-8").split("\n")
        else:
            return None
        values = list(map(float, raw_values))
        timestamps = list(map(int, stamps))
    except (ValueError, OverflowError):  # not UTF-8, a lone surrogate, a huge int, NaN or inf stamp
        return None
    pieces = joined.split(b"\n")
    longest = max(map(len, pieces))
    if len(pieces) != len(names) or 0 < max_path_bytes < longest:  # a newline in a path, or too long
        return None
    if not math.isfinite(sum(values)):  # NaN or inf somewhere: sorted out point by point
        return None
    if min(stamps) < 1:
        if any(stamp < 1 and stamp != -1 for stamp in stamps):
            return None
        timestamps = [now if stamp == -1 else stamp for stamp in timestamps]
    if max(timestamps) > MAX_TIMESTAMP:
        return None
    parsed = ParsedLines(names, values, timestamps)
    parsed.apply_name_rule(rule, joined, longest)
    return parsed


def _decode_slow(points: Sequence, now: int, max_path_bytes: int, rule: NameRule) -> ParsedLines:
    """Point by point, for batches holding at least one point the fast path cannot take."""
    parsed = ParsedLines()
    names, values, timestamps = parsed.names, parsed.values, parsed.timestamps
    for point in points:
        try:
            path, (stamp, value) = point
        except (TypeError, ValueError):
            parsed.add_bad(_example(point, "not (path, (timestamp, value))"))
            continue
        name = _path_name(path, max_path_bytes)
        if name is None:
            parsed.add_bad(_example(point, "bad path"))
            continue
        number = _number(value)
        if number is None or number in (math.inf, -math.inf):
            parsed.add_bad(_example(point, "bad value"))
            continue
        if number != number:
            parsed.nan_dropped += 1
            continue
        timestamp = _timestamp(stamp, now)
        if timestamp is None:
            parsed.add_bad(_example(point, "bad timestamp"))
            continue
        names.append(name)
        values.append(number)
        timestamps.append(timestamp)
    parsed.apply_name_rule(rule)
    return parsed


def _path_name(path: Unpickled, max_path_bytes: int) -> Optional[str]:
    try:
        if type(path) is str:
            raw = path.encode("utf-8")
        elif type(path) in (bytes, bytearray):
            raw = bytes(path)
            path = raw.decode("utf-8")
        else:
            return None
    except ValueError:  # UnicodeError: not UTF-8, or a lone surrogate
        return None
    if 0 < max_path_bytes < len(raw):
        return None
    return path  # the metric-name rule decides the rest


def _number(raw: Unpickled) -> Optional[float]:
    # like carbon, numeric strings are accepted; booleans and containers are not
    if type(raw) not in (int, float, str, bytes):
        return None
    try:
        return float(raw)
    except (ValueError, OverflowError):
        return None


def _timestamp(raw: object, now: int) -> Optional[int]:
    if type(raw) is int:
        stamp = raw
    else:
        number = _number(raw)
        if number is None or not math.isfinite(number):
            return None
        # truncated as plaintext does; -1.0 still means now, other values below 1 stay refused
        stamp = int(number) if number >= 1 else (-1 if number == -1 else 0)
    if stamp == -1:
        return now
    return stamp if 0 < stamp <= MAX_TIMESTAMP else None


def _example(point: object, why: str) -> bytes:
    return f"{_describe(point)} ({why})".encode("utf-8", "backslashreplace")


def _describe(obj: Unpickled, depth: int = 2) -> str:
    """A short description that never walks far: a pickle can share objects into huge graphs."""
    kind = type(obj)
    if kind in (str, bytes, bytearray):
        text = repr(obj[:_EXAMPLE_CHARS])
        return text + "..." if len(obj) > _EXAMPLE_CHARS else text
    if kind is int:
        return repr(obj) if obj.bit_length() <= 64 else f"<int of {obj.bit_length()} bits>"
    if kind in (float, bool) or obj is None:
        return repr(obj)
    if kind in (tuple, list) and depth > 0 and len(obj) <= 3:
        inner = ", ".join(_describe(item, depth - 1) for item in obj)
        return f"({inner})" if kind is tuple else f"[{inner}]"
    try:
        return f"<{kind.__name__} of {len(obj)} items>"
    except TypeError:
        return f"<{kind.__name__}>"
