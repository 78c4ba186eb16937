"""Carbon's plaintext protocol, ``path value timestamp`` per line, parsed a whole chunk at a time.

``parse_plaintext`` turns a buffer of complete lines into parallel lists of names, values and
timestamps. When the C extension (``turok_core.parse._speedups``, built by ``make install``) is there,
a chunk of clean lines is parsed by it in one call, without a Python step per line; it answers
None for anything unusual and the Python code below decides. That code first tries a fast path
that handles every line of the chunk with C-level operations (``bytes.split``, ``map(float, …)``,
one UTF-8 decode of all names); only when that path meets something unusual does it go through
the chunk line by line, so one malformed line costs the chunk a slower parse but never loses its
good lines.

Semantics (carbon's): a timestamp of ``-1`` means now, float timestamps are truncated, NaN
values are dropped silently (counted in ``nan_dropped``). Bad lines are counted, a few kept as
examples: wrong field count, non-numeric or infinite value, non-numeric timestamp, timestamp
<= 0 (other than -1) or past year 9999, a path that is not UTF-8, a line longer than the limit.
Names then go through Turok's metric-name rule (``turok_core.model.metric_names``): normalised, or
refused as bad lines with the reason in the example; a clean chunk costs a few byte operations.

``StreamLines`` cuts a TCP byte stream into complete-line chunks with a bounded partial tail.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

from turok_core.model.metric_names import MAX_COMPONENT_BYTES, NameRule
from turok_core.parse.batch import BAD_EXAMPLE_BYTES, MAX_TIMESTAMP, ParsedLines
from turok_core.parse.native import speedups as _native


def parse_plaintext(data: bytes, now: float, max_line_length: int = 0,
                    rule: Optional[NameRule] = None) -> ParsedLines:
    """Parse a chunk of plaintext lines (``\\n`` or ``\\r\\n`` ended; a final line may lack it).

    ``now`` replaces ``-1`` timestamps. ``max_line_length`` > 0 makes longer lines bad.
    ``rule``: the metric-name rule (default: its default limits).
    """
    rule = rule or NameRule()
    if _native is not None and type(data) is bytes:
        columns = _native.parse_lines(data, int(now), max_line_length, rule.max_bytes)
        if columns is not None:
            return ParsedLines(*columns)
    lines = data.split(b"\n")
    longest_line = max(map(len, lines))
    if 0 < max_line_length < longest_line:
        return _parse_slow(lines, int(now), max_line_length, rule)
    parsed = _parse_fast(lines, int(now), rule, longest_line)
    if parsed is None:
        return _parse_slow(lines, int(now), max_line_length, rule)
    return parsed


def _parse_fast(lines: list[bytes], now: int, rule: NameRule, longest_line: int) -> ParsedLines | None:
    """Every line at once, or None when any line needs a closer look."""
    rows = list(filter(None, map(bytes.split, lines)))  # blank lines dropped, at C speed
    if not rows:
        return ParsedLines()
    try:
        # strict: rows of unequal length raise; equal length other than 3 gives != 3 columns
        columns = list(zip(*rows, strict=True))
    except ValueError:
        return None
    if len(columns) != 3:
        return None
    raw_names, raw_values, raw_times = columns
    try:
        values = list(map(float, raw_values))
    except ValueError:
        return None
    total = sum(values)
    if not math.isfinite(total):  # some NaN or inf (or an overflowing sum): sort it out per line
        return None
    try:
        timestamps = list(map(int, raw_times))
    except ValueError:
        truncated = _float_timestamps(raw_times)
        if truncated is None:
            return None
        timestamps = truncated
    if min(timestamps) <= 0:
        if any(t <= 0 and t != -1 for t in timestamps):
            return None
        timestamps = [now if t == -1 else t for t in timestamps]
    if max(timestamps) > MAX_TIMESTAMP:
        return None
    joined = b"\n".join(raw_names)
    try:
        names = joined.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    parsed = ParsedLines(names, values, timestamps)
    # no name is longer than its line: short lines spare measuring every name
    longest = longest_line if longest_line <= MAX_COMPONENT_BYTES else max(map(len, raw_names))
    parsed.apply_name_rule(rule, joined, longest)
    return parsed


def _float_timestamps(raw_times: Iterable[bytes]) -> list[int] | None:
    """Timestamps written as floats (``1400000000.5``, ``1.4e9``), truncated; None if any is bad."""
    try:
        return [_truncate(float(raw)) for raw in raw_times]
    except (ValueError, OverflowError):
        return None


def _truncate(value: float) -> int:
    # -1.0 still means now; other non-positive values stay non-positive so they are refused
    if value >= 1.0:
        return int(value)
    return -1 if value == -1.0 else 0


def _parse_slow(lines: list[bytes], now: int, max_line_length: int, rule: NameRule) -> ParsedLines:
    """Line by line, for chunks holding at least one line the fast path cannot take."""
    parsed = ParsedLines()
    names, values, timestamps = parsed.names, parsed.values, parsed.timestamps
    for line in lines:
        if max_line_length > 0 and len(line) > max_line_length:
            parsed.add_bad(line, note=b" (%d bytes, over the %d-byte line limit)" % (len(line), max_line_length))
            continue
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            parsed.add_bad(line)
            continue
        raw_name, raw_value, raw_time = fields
        try:
            value = float(raw_value)
            try:
                timestamp = int(raw_time)
            except ValueError:
                timestamp = _truncate(float(raw_time))
            name = raw_name.decode("utf-8")
        except (ValueError, OverflowError):  # UnicodeDecodeError is a ValueError
            parsed.add_bad(line)
            continue
        if value != value:
            parsed.nan_dropped += 1
            continue
        if value in (math.inf, -math.inf):
            parsed.add_bad(line)
            continue
        if timestamp == -1:
            timestamp = now
        elif timestamp <= 0 or timestamp > MAX_TIMESTAMP:
            parsed.add_bad(line)
            continue
        names.append(name)
        values.append(value)
        timestamps.append(timestamp)
    parsed.apply_name_rule(rule)
    return parsed


class StreamLines:
    """Cuts a byte stream into chunks of complete lines, keeping at most one partial line.

    A partial line growing past ``max_line_length`` is thrown away up to its newline and
    counted in ``discarded`` (its start kept in ``discarded_example``), so a client that never
    sends a newline cannot grow the gateway's memory.
    """

    def __init__(self, max_line_length: int) -> None:
        self.max_line_length = max_line_length
        self.discarded = 0
        self.discarded_example = b""
        self._tail = b""
        self._skipping = False  # inside an over-long line: drop bytes until its newline

    @property
    def pending(self) -> bytes:
        """The partial line kept so far."""
        return self._tail

    def feed(self, data: bytes) -> bytes:
        """The complete lines now available (possibly empty); the partial tail is kept."""
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return b""
            self._skipping = False
            data = data[newline + 1:]
        cut = data.rfind(b"\n")
        if cut < 0:
            self._keep_tail(self._tail + data if self._tail else data)
            return b""
        complete = self._tail + data[:cut + 1] if self._tail else data[:cut + 1]
        self._keep_tail(data[cut + 1:])
        return complete

    def _keep_tail(self, tail: bytes) -> None:
        if len(tail) > self.max_line_length:
            self.discarded += 1
            self.discarded_example = tail[:BAD_EXAMPLE_BYTES]
            self._tail = b""
            self._skipping = True
        else:
            self._tail = tail
