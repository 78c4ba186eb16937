"""A whisper file's archives → the blocks Turok stores for its metric, at its Turok schema.

For each archive of the metric's Turok schema (``MetricPolicy``) and each of its slots in the
window that archive keeps at time ``now``: when the file has an archive of the same step whose
window (what ``whisper.fetch`` shows) covers the slot, its value is copied; otherwise the slot
is rolled up (``turokd.rollup.rollup_known``: the Turok schema's aggregation method and
xFilesFactor, whisper's arithmetic) from the finest file archive whose step divides it and whose
window covers the whole slot (the slot holding ``now``: what is known of it). A Turok resolution
finer than every archive covering a time gets nothing there: data is never invented. With the
file's schema equal to Turok's, every archive is copied slot for slot, which is what makes
``/render`` equal ``whisper.fetch``.

The result is ``(metric, step, block_start, {slot index: value})`` for each block that holds a
value, ready for ``write_blocks``. ``planned_blocks`` counts the blocks of a file from its header
alone (for the cost estimate). Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from turok_core.importer.whisper_file import WhisperArchive, WhisperHeader, archive_values, archive_window
from turok_core.model.schemas import Archive, MetricPolicy
from turok_core.turokd.rollup import rollup_known, whisper_xff

Block = tuple[str, int, int, dict[int, float]]


@dataclass
class FilePlan:
    blocks: list[Block]
    points: int  # values read from the file's archives
    slots: int  # slot values in the blocks


def turok_window(archive: Archive, now: int) -> tuple[int, int]:
    """``[first, end)`` slot starts a Turok archive keeps at ``now`` (as whisper counts them)."""
    end = now - now % archive.step + archive.step
    return end - archive.step * archive.points, end


def _uncovered(low: int, high: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[low, high)`` outside every interval of ``covered``."""
    parts = [(low, high)]
    for c_low, c_high in covered:
        parts = [piece for p_low, p_high in parts
                 for piece in ((p_low, min(p_high, c_low)), (max(p_low, c_high), p_high)) if piece[0] < piece[1]]
    return parts


def _column_for(target: Archive, first: int, end: int,
                sources: Sequence[tuple[WhisperArchive, int, list[Optional[float]]]],
                aggregation: str, xff: float) -> list[Optional[float]]:
    """The target's slot values over ``[first, end)``."""
    step = target.step
    column: list[Optional[float]] = [None] * ((end - first) // step)
    covered: list[tuple[int, int]] = []
    # the same step first (copied), then finer archives from finest (rolled up), each only where
    # nothing before it covered the slot
    ordered = sorted((s for s in sources if step % s[0].step == 0), key=lambda s: (s[0].step != step, s[0].step))
    for archive, source_first, values in ordered:
        source_end = source_first + archive.retention
        # target slots the source covers whole; at the top, where every window ends at ``now``, the
        # slot holding ``now`` too (rolled up from what is known, as whisper and turokd do)
        low = max(first, source_first + (-source_first) % step)
        high = min(end, source_end + (-source_end) % step)
        if low >= high:
            continue
        ratio = step // archive.step
        for part_low, part_high in _uncovered(low, high, covered):
            at, to = (part_low - source_first) // archive.step, (part_high - source_first) // archive.step
            index = (part_low - first) // step
            if ratio == 1:
                column[index:index + to - at] = values[at:to]
                continue
            for chunk_at in range(at, to, ratio):
                known = [v for v in values[chunk_at:chunk_at + ratio] if v is not None]
                if known:
                    column[index] = rollup_known(known, ratio, aggregation, xff)
                index += 1
        covered.append((low, high))
    return column


def plan_file(metric: str, header: WhisperHeader, data: bytes, policy: MetricPolicy, now: int,
              span_of: Callable[[int, int], int]) -> FilePlan:
    """The blocks of ``metric`` from a whisper file read by ``read_whisper``; ``span_of(step,
    level)``: seconds per block of the policy's archive ``level`` (``BlockStore.archive_span``:
    a coarse archive's blocks are longer, as turokd writes them)."""
    sources = []
    points = 0
    for archive in header.archives:
        first, values = archive_values(data, archive, now)
        points += len(values) - values.count(None)
        sources.append((archive, first, values))
    xff = whisper_xff(policy.x_files_factor)
    blocks: list[Block] = []
    slots = 0
    for level, target in enumerate(policy.archives):
        first, end = turok_window(target, now)
        column = _column_for(target, first, end, sources, policy.aggregation_type, xff)
        step, span = target.step, span_of(target.step, level)
        block = first - first % span
        while block < end:
            low = max(block, first)
            values = column[(low - first) // step:(min(block + span, end) - first) // step]
            offset = (low - block) // step
            found = {offset + i: v for i, v in enumerate(values) if v is not None}
            if found:
                blocks.append((metric, step, block, found))
                slots += len(found)
            block += span
    return FilePlan(blocks, points, slots)


def planned_blocks(header: WhisperHeader, policy: MetricPolicy, now: int, span_of: Callable[[int, int], int]) -> int:
    """How many blocks ``plan_file`` may write for a file with ``header`` at most: those of each
    Turok archive's window that some file archive of a dividing step covers."""
    count = 0
    for level, target in enumerate(policy.archives):
        first, end = turok_window(target, now)
        covered = [archive_window(a, now) for a in header.archives if target.step % a.step == 0]
        if not covered:
            continue
        low = max(first, min(start for start, _ in covered))
        span = span_of(target.step, level)
        if low < end:
            count += (end - 1) // span - low // span + 1
    return count
