"""Rollups: a coarse archive's slots computed from the finer archive's slots, the way whisper does.

A coarse slot ``[c, c + coarse_step)`` covers ``coarse_step // finer_step`` finer slots. Its value
is the aggregate (the schema's ``aggregationMethod``) of the finer slots that hold a value, in
time order, and it is written only when ``known / total >= xFilesFactor``; otherwise the coarse
slot is left as it was, which is what whisper's propagation does. The arithmetic is whisper's own
(``float(sum(v)) / len(v)`` for an average, the ``xFilesFactor`` compared as the 32-bit float
whisper keeps in its header), so Turok's rollups are bit-identical to whisper's.

Why this is safe under at-least-once delivery, late points and several turokd instances:
a coarse slot is always *recomputed* from the finer slots it covers, never accumulated, so
processing a message again (a replay) or a late point inside the grace window recomputes the same
or a fresher value, and two turokd instances computing the same coarse slot from the same finer
data write the same value. Blocks are merged with conditional writes (``storage.py``), so two
instances writing different slots of one block never lose each other's slots.

The race between instances, and how ``rollup_writer.rollup_blocks`` closes it: instance A reads the finer
slots before instance B's finer write lands, B reads after it and writes its coarse value first,
then A writes its older value over B's. So after writing, each instance reads the finer slots
again and recomputes the coarse slots whose input changed since its read, until a read shows no
change. The last coarse write of a slot is then computed from the final finer data: a finer write
after that read would make its writer's own rollup (which runs after its finer write) the last.
What remains: an instance whose finer data keeps changing for ``ROLLUP_VERIFY_ROUNDS`` rounds
gives up, and its coarse slot may lag until the next write touching it (any later point, late
point or replay of the same window recomputes it). A turokd that dies between its finer write and
its rollup has not deleted the message, so the redelivery recomputes it. Finer slots only ever
gain values, so a coarse slot never shows data that was not there, and one that reached the
xFilesFactor keeps reaching it.

Settled slots: whisper recomputes a coarse slot only when a point is written into the finer
archive, i.e. while the finer archive still covers the slot (a point older than the finer
retention goes straight into the coarse archive). A coarse slot starting before ``now - finer
retention`` (``settled_before``) is therefore *settled*: a rollup sets it only where no value is
stored, so a value whisper computed when the finer archive held the slot whole (an import) or a
point written straight into the coarse archive (a backfill) is not replaced by a rollup of the
part of the slot the finer archive still holds.

Whole blocks held in memory (``coarse_blocks.py``) roll up a run of coarse slots per call
(``rollup_into``, ``known_span``): in C (``_speedups.c``) for ``array('d')`` blocks, with the
Python functions here as the reference giving the same doubles (CPython 3.11's ``sum`` of
floats adds left to right from 0.0; the C code does the same).

This module is pure (no I/O); ``rollup_writer.rollup_blocks`` reads and writes DynamoDB around it.
"""
from __future__ import annotations

import math
import struct
from array import array
from functools import lru_cache
from typing import Iterable, Mapping, MutableSequence, Optional, Sequence

from turok_core.model.extensions import load_extension

# the C rollups of whole blocks, or None (not built, or TUROK_PURE_PYTHON=1): the references below
native = load_extension("turok_core.turokd._speedups")

# Turok's aggregation names → whisper's
WHISPER_METHODS = {"average": "average", "sum": "sum", "minimum": "min", "maximum": "max", "last": "last"}
# aggregation names → the C code's method numbers
METHOD_CODES = {"average": 0, "sum": 1, "minimum": 2, "maximum": 3, "last": 4}


def settled_before(now: float, finer_retention: int) -> float:
    """Coarse slots starting before this are settled at ``now`` (module docstring); a retention
    of 0 (unknown) settles nothing."""
    return now - finer_retention if finer_retention > 0 else -math.inf


@lru_cache(maxsize=256)
def whisper_xff(x_files_factor: float) -> float:
    """The xFilesFactor as whisper compares it: stored in the file header as a 32-bit float."""
    return struct.unpack("!f", struct.pack("!f", x_files_factor))[0]


def rollup_value(values: Sequence[Optional[float]], aggregation_type: str,
                 x_files_factor: float) -> Optional[float]:
    """The coarse value of one coarse slot from its finer slots (``None`` = gap), or ``None``.

    ``None`` means "leave the coarse slot as it is": no finer value is known, or the known
    fraction is below ``x_files_factor``.
    """
    return rollup_known([v for v in values if v is not None], len(values), aggregation_type,
                        whisper_xff(x_files_factor))


def rollup_known(known: Sequence[float], total: int, aggregation_type: str, xff: float) -> Optional[float]:
    """``rollup_value`` of the ``known`` finer values (in time order) of ``total`` slots, with
    ``xff`` already as whisper compares it (``whisper_xff``)."""
    if not known or len(known) / total < xff:
        return None
    if aggregation_type == "average":
        return float(sum(known)) / float(len(known))
    if aggregation_type == "sum":
        return float(sum(known))
    if aggregation_type == "minimum":
        return min(known)
    if aggregation_type == "maximum":
        return max(known)
    if aggregation_type == "last":
        return known[-1]
    raise ValueError(f"unknown aggregation {aggregation_type!r}")


def _doubles(values: object) -> bool:
    return isinstance(values, array) and values.typecode == "d"


def known_span(values: Sequence[Optional[float]]) -> tuple[int, int, int]:
    """How many slots of a block hold a value (None and NaN are gaps), the first such index and
    the last: ``(0, -1, -1)`` when none. In C for an ``array('d')``."""
    if native is not None and _doubles(values):
        return native.known_span(values)
    return py_known_span(values)


def py_known_span(values: Sequence[Optional[float]]) -> tuple[int, int, int]:
    """``known_span``'s reference."""
    indexes = [i for i, v in enumerate(values) if v is not None and v == v]
    return (len(indexes), indexes[0], indexes[-1]) if indexes else (0, -1, -1)


def rollup_into(values: Sequence[Optional[float]], offset: int, coarse: MutableSequence[float], index: int,
                count: int, ratio: int, aggregation_type: str, xff: float) -> None:
    """Roll ``count`` whole coarse slots up from a block's finer slots: the ``ratio`` finer slots
    from ``values[offset + k * ratio]`` give ``coarse[index + k]``, left as it is when none holds a
    value (None and NaN are gaps), NaN below the xFilesFactor (``xff`` as ``whisper_xff`` gives it),
    else ``rollup_known``'s value. In C when both are ``array('d')``."""
    method = METHOD_CODES.get(aggregation_type)
    if native is not None and method is not None and _doubles(values) and _doubles(coarse):
        native.rollup_into(values, offset, coarse, index, count, ratio, method, xff)
    else:
        py_rollup_into(values, offset, coarse, index, count, ratio, aggregation_type, xff)


def py_rollup_into(values: Sequence[Optional[float]], offset: int, coarse: MutableSequence[float], index: int,
                   count: int, ratio: int, aggregation_type: str, xff: float) -> None:
    """``rollup_into``'s reference."""
    if count < 0 or ratio < 1 or offset < 0 or index < 0 or offset + count * ratio > len(values) \
            or index + count > len(coarse):
        raise IndexError("rollup_into: slots outside the blocks")
    for k in range(count):
        window = values[offset + k * ratio:offset + (k + 1) * ratio]
        known = [v for v in window if v is not None and v == v]
        if known:
            value = rollup_known(known, ratio, aggregation_type, xff)
            coarse[index + k] = math.nan if value is None else value


def rollup_slots(finer: Mapping[int, Optional[float]], finer_step: int, coarse_step: int,
                 slots: Iterable[int], aggregation_type: str,
                 x_files_factor: float) -> list[tuple[int, float]]:
    """``(coarse_start, value)`` for each of the coarse ``slots`` that gets a value.

    ``finer`` maps finer slot starts to their values (missing or ``None`` = gap). Coarse slots
    that fail the xFilesFactor (or have no data) are left out: they keep their stored value.
    """
    if coarse_step % finer_step:
        raise ValueError(f"{finer_step}s does not divide {coarse_step}s")
    ratio = coarse_step // finer_step
    wanted = set(slots)
    for start in wanted:
        if start % coarse_step:
            raise ValueError(f"slot {start} is not aligned to {coarse_step}s")
    result = []
    # only coarse slots some finer slot falls in can get a value: a block of hundreds of coarse
    # slots usually has data in a few, so look at those instead of every slot's finer slots
    for start in sorted({slot - slot % coarse_step for slot in finer} & wanted):
        values = [finer.get(start + i * finer_step) for i in range(ratio)]
        value = rollup_value(values, aggregation_type, x_files_factor)
        if value is not None:
            result.append((start, value))
    return result


def consolidate(start: int, step: int, values: Sequence[Optional[float]], max_points: int,
                aggregation_type: str) -> tuple[int, int, list[Optional[float]]]:
    """``values`` (slots from ``start``) merged into at most ``max_points`` buckets by the metric's own method.

    graphite-web consolidates a series longer than ``maxDataPoints`` by averaging, which turns a
    sum metric's totals into averages; this does it with ``aggregation_type`` instead. Buckets
    span a whole number of slots and start at multiples of their span, so successive requests
    band alike. Returns ``(start, step, values)``; unchanged when already short enough.
    """
    count = len(values)
    if max_points < 1 or count <= max_points:
        return start, step, list(values)
    per = -(-count // max_points)
    while True:
        span = per * step
        first = start - start % span
        buckets = -(-(start + count * step - first) // span)
        if buckets <= max_points:
            break
        per += 1
    merged: list[Optional[float]] = []
    for bucket in range(buckets):
        low = max(0, (first + bucket * span - start) // step)
        high = min(count, (first + (bucket + 1) * span - start) // step)
        merged.append(rollup_value(values[low:high], aggregation_type, 0.0) if high > low else None)
    return first, span, merged
