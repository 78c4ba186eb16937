"""How a metric's slots are laid out in DynamoDB items ("blocks").

An item holds ``block_slots`` consecutive slots of one metric at one resolution, starting at
``start_time`` (epoch seconds, aligned to the block span). Spans divide a day, so a block never
crosses a UTC midnight and always lives in the table of its start's day. ``datapoints`` holds one
value per slot (``None`` for a gap), as msgpack in a binary attribute; the reader also accepts the
design's JSON string.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import msgpack

from turok_core.model.resolution import SECONDS_PER_DAY


def block_span(step: int, block_slots: int) -> int:
    """Seconds per block: ``step`` × the largest slot count ≤ ``block_slots`` that divides a day."""
    if SECONDS_PER_DAY % step:
        raise ValueError(f"resolution {step}s does not divide a day")
    slots_per_day = SECONDS_PER_DAY // step
    slots = max(1, min(block_slots, slots_per_day))
    while slots_per_day % slots:
        slots -= 1
    return step * slots


def encode_datapoints(values: Sequence[Optional[float]]) -> bytes:
    """A block's slot values, ``None`` for gaps, trailing gaps dropped, as msgpack."""
    end = len(values)
    while end and values[end - 1] is None:
        end -= 1
    return msgpack.packb(list(values[:end]), use_bin_type=True)


def decode_datapoints(attribute: object) -> list[Optional[float]]:
    """The slot list of a stored item: msgpack bytes, or the design's JSON-encoded list."""
    if isinstance(attribute, (bytes, bytearray, memoryview)):
        return list(msgpack.unpackb(bytes(attribute), raw=False))
    if isinstance(attribute, str):
        return list(json.loads(attribute))
    raise ValueError(f"unsupported datapoints attribute of type {type(attribute).__name__}")
