"""How a metric's slots are laid out in DynamoDB items ("blocks"), and how long a block is.

An item holds the consecutive slots of one metric at one resolution from ``start_time`` (epoch
seconds). Spans divide a day, so a block never crosses a UTC midnight and always lives in the
table of its start's day. Two spans come from here, and only from here:

- ``block_span(step, block_slots)``: the **key grid** at every step (every block starts on it),
  and the length of the blocks of a metric's first (base) archive. ``block_slots`` 0 (the
  default) sizes them so a typical block fills one write unit; anything else is an explicit slot
  count (tests and benchmarks close blocks within minutes with a few). A base block's SQS
  messages are held until it is written, so base blocks stay short (SQS's 12-hour visibility).
- ``coarse_block_span(step, block_slots, coarse_block_slots)``: the length of the blocks of a
  metric's coarser archives (levels 1 and up), a multiple of the grid span that divides the day.
  turokd computes those from finer blocks already written and holds no message for them, so
  they may be longer. At the defaults they get a budget of two write units,
  ``(2 × 1024 − 128) // 2`` = 960 slots at ~2 bytes a slot: the rounding waste of one partly
  filled write unit is then spread over twice the slots (360 one-minute averages of doubles take
  ~2.4 KB, three units; 720 take ~4.9 KB, five units, not six). That is 720 slots at 1 minute,
  864 at 10 s (a coarse archive of a 1 s base), the day (24) at 1 hour. With an explicit
  ``block_slots`` and ``coarse_block_slots`` 0, coarse blocks are as long as base blocks.

The store accepts a block longer than the grid span (up to its day's end) and never cuts one
to the grid; readers ask keys from ``start - start % coarse_block_span(…)`` so a longer block
starting before the range is found.

``datapoints`` is a binary attribute in block format v2 (``block_codec.py``: compressed, a version
byte first), written by ``encode_datapoints`` everywhere blocks are written. ``decode_datapoints``
(or ``decode_into``, straight into a series) also reads v1 blocks (a msgpack list of floats and
None) and the design's JSON-encoded list string, so blocks stored before v2 stay readable and are
rewritten as v2 when merged.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterable, MutableSequence, Optional, Sequence

import msgpack

from turok_core.model.resolution import SECONDS_PER_DAY
from turok_core.storage import block_codec
from turok_core.storage.native import blockcodec

WRITE_UNIT_BYTES = 1024
# what an item holds besides its values: the attribute names (26 bytes), a metric name of up to
# ~90 bytes, start_time, and the v2 header
ITEM_OVERHEAD_BYTES = 128
# v2 bytes per slot of a typical series: integer counters and short decimals take 1.3-1.8
# (docs/write-path.md); full-precision doubles ~6.8 take three write units per block
TYPICAL_BYTES_PER_SLOT = 2
AUTO_SLOTS = (WRITE_UNIT_BYTES - ITEM_OVERHEAD_BYTES) // TYPICAL_BYTES_PER_SLOT  # 448
# coarse blocks (module doc): two write units' budget
COARSE_WRITE_UNITS = 2
AUTO_COARSE_SLOTS = (COARSE_WRITE_UNITS * WRITE_UNIT_BYTES - ITEM_OVERHEAD_BYTES) // TYPICAL_BYTES_PER_SLOT  # 960


@functools.lru_cache(maxsize=256)  # called per block (and per slot by slots_by_block): a few distinct steps
def block_span(step: int, block_slots: int) -> int:
    """Seconds per block at resolution ``step``: ``step`` × the largest slot count that divides a
    day and is at most ``block_slots`` (0: ``AUTO_SLOTS``, what fits one write unit)."""
    if SECONDS_PER_DAY % step:
        raise ValueError(f"resolution {step}s does not divide a day")
    slots_per_day = SECONDS_PER_DAY // step
    slots = max(1, min(block_slots if block_slots > 0 else AUTO_SLOTS, slots_per_day))
    while slots_per_day % slots:
        slots -= 1
    return step * slots


@functools.lru_cache(maxsize=256)
def coarse_block_span(step: int, block_slots: int, coarse_block_slots: int = 0) -> int:
    """Seconds per block of a metric's coarser archives (levels ≥ 1) at ``step``: the largest
    multiple of ``block_span(step, block_slots)`` that divides a day and has at most
    ``coarse_block_slots`` slots (0: ``AUTO_COARSE_SLOTS`` when ``block_slots`` is 0, else the
    grid span itself); never less than the grid span."""
    grid = block_span(step, block_slots)
    if coarse_block_slots <= 0:
        if block_slots > 0:
            return grid
        coarse_block_slots = AUTO_COARSE_SLOTS
    grid_slots, slots_per_day = grid // step, SECONDS_PER_DAY // step
    best = grid_slots
    for slots in range(grid_slots, min(coarse_block_slots, slots_per_day) + 1, grid_slots):
        if slots_per_day % slots == 0:
            best = slots
    return step * best


def archive_span(step: int, level: int, block_slots: int, coarse_block_slots: int = 0) -> int:
    """Seconds per block of a metric's archive ``level`` (0: its first) at ``step``."""
    return block_span(step, block_slots) if level == 0 else coarse_block_span(step, block_slots, coarse_block_slots)


def day_slots(start: int, step: int) -> int:
    """How many slots of ``step`` a block starting at ``start`` may hold: up to its UTC day's end."""
    return (SECONDS_PER_DAY - start % SECONDS_PER_DAY) // step


def encode_datapoints(values: Sequence[Optional[float]]) -> bytes:
    """A block's slot values (``None`` or NaN for gaps) in block format v2; trailing gaps dropped.

    ``values`` may be a list or an ``array('d')``; the C codec takes either whole."""
    if blockcodec is not None:
        return blockcodec.encode(values)
    return block_codec.encode(values)


def decode_datapoints(attribute: object) -> list[Optional[float]]:
    """The slot list of a stored item (``None`` for gaps): v2 or v1 (msgpack) bytes, or the
    design's JSON-encoded list."""
    if isinstance(attribute, (bytes, bytearray, memoryview)):
        blob = bytes(attribute)
        if blob[:1] == b"\x02":
            return blockcodec.decode(blob) if blockcodec is not None else block_codec.decode(blob)
        return list(msgpack.unpackb(blob, raw=False))
    if isinstance(attribute, str):
        return list(json.loads(attribute))
    raise ValueError(f"unsupported datapoints attribute of type {type(attribute).__name__}")


def decode_into(attribute: object, row: MutableSequence[Any], offset: int) -> None:
    """A stored item's values set into series ``row`` (``block_codec.decode_into``): slot ``i`` of
    the block at ``row[offset + i]``, gaps and slots outside the row left as they are. A v2 blob
    goes straight into the row, without a list per block."""
    if isinstance(attribute, (bytes, bytearray, memoryview)) and bytes(attribute[:1]) == b"\x02":
        (blockcodec if blockcodec is not None else block_codec).decode_into(attribute, row, offset)
        return
    length = len(row)
    for index, value in enumerate(decode_datapoints(attribute)):
        if value is not None and 0 <= offset + index < length:
            row[offset + index] = value


def slots_by_block(slots: Iterable[tuple[str, int, int, float]],
                   span_of: Callable[[int], int]) -> list[tuple[str, int, int, dict[int, float]]]:
    """``(metric, step, slot_start, value)`` each, grouped into their blocks as
    ``(metric, step, block_start, {slot index: value})`` (the later value of a slot given twice)."""
    blocks: dict[tuple[str, int, int], dict[int, float]] = {}
    for metric, step, slot_start, value in slots:
        if slot_start % step:
            raise ValueError(f"slot {slot_start} of {metric!r} is not aligned to {step}s")
        span = span_of(step)
        start = slot_start - slot_start % span
        blocks.setdefault((metric, step, start), {})[(slot_start - start) // step] = value
    return [(metric, step, start, values) for (metric, step, start), values in blocks.items()]
