"""turokd's open blocks: base slots held in memory until their block closes, then written once.

Writing a block costs its whole size in write units every time (``../shared/reference``), so
turokd does not write a block on every SQS batch that touches it: it keeps the block's slots
here and writes it once, ``close_delay`` seconds after the block's end (time for the last slot's
message to arrive). The SQS messages that carried the slots are *held* (not deleted) until every
block they touched is written, so a turokd that dies loses nothing: SQS redelivers what it held.

A block is keyed by ``(step, block_start)`` and holds, per metric, one float per slot (NaN is a
gap: finite values are all a message may carry). A later message for a slot replaces the slot's
value, as before (last write wins, like whisper for a timestamp). Data arriving for a block that
was already written reopens it, and the store merges it into the stored item. Such late data
usually comes in a stream (a spool draining, a relay replaying), so a reopened block is merged
once it has had no new data for ``late_delay`` seconds (at most ``late_max`` after it reopened),
not once per batch; its messages are held until that merge (a receipt due while the merge it
waits for was pushed back is held again until then). A block that opens after its close time
(late data this turokd never wrote: a replay, a restart, a lease that moved) waits the same way,
so a stream of late slots is written once, not once for its first slot and once for the rest.

A batch's values go into the blocks a window at a time (``place``: in C, ``_speedups.c``, with
``py_place`` as the reference), without a Python step per point.

Thread-safe: turokd's pollers add batches while its tick closes blocks. ``take_due`` moves due
blocks to *writing* (still readable by cache queries) and hands out the receipts whose blocks are
all due; the caller writes them and then calls ``written`` or, on failure, ``restore``.
"""
from __future__ import annotations

import heapq
import math
import threading
from array import array
from dataclasses import dataclass, field
from sys import intern
from typing import Iterable, Mapping, Optional, Sequence

from turok_core.model.extensions import load_extension
from turok_core.storage.block_layout import block_span

# turokd's C loops, or None (not built, or TUROK_PURE_PYTHON=1): ``py_place`` then
native = load_extension("turok_core.turokd._speedups")
NAN = math.nan
WRITTEN_IDS_KEPT = 20000  # block ids (step, start; not per metric) remembered as written
BlockId = tuple[int, int]  # (step, block start)


def place(block: dict[str, array], window: Mapping[str, float], index: int, slots: int) -> None:
    """Set each metric's value of ``window`` at ``index`` of its array in ``block``, a new
    block of ``slots`` gaps for a metric the block does not hold yet."""
    if native is not None and type(block) is dict and type(window) is dict:
        native.place(block, window, index, _gaps(slots))
    else:
        py_place(block, window, index, slots)


def py_place(block: dict[str, array], window: Mapping[str, float], index: int, slots: int) -> None:
    """``place``'s reference."""
    missing = window.keys() - block.keys()
    if missing:
        empty = _gaps(slots)
        for metric in missing:
            # interned once per block: each batch decodes its names anew, and a name kept (here,
            # in the coarse blocks, policies, the announcer) is then one string, not a copy per
            # block that first held it
            block[intern(metric)] = array("d", empty)
    for metric, value in window.items():  # a Python step per point
        block[metric][index] = value


_GAPS: dict[int, array] = {}


def _gaps(slots: int) -> array:
    """A block of ``slots`` gaps to copy from (never changed itself)."""
    gaps = _GAPS.get(slots)
    if gaps is None:
        gaps = _GAPS[slots] = array("d", [NAN]) * slots
    return gaps


@dataclass
class DueBlocks:
    """Blocks taken for writing and the SQS receipts that become deletable once they are."""
    blocks: dict[BlockId, dict[str, array]] = field(default_factory=dict)
    receipts: list[tuple[float, str]] = field(default_factory=list)  # (deadline, receipt handle)

    @property
    def receipt_handles(self) -> list[str]:
        return [receipt for _deadline, receipt in self.receipts]


class OpenBlocks:
    """Slot values of blocks not yet written, and the SQS messages waiting on them."""

    def __init__(self, block_slots: int, close_delay: float, late_delay: float = 0.0,
                 late_max: float = 0.0) -> None:
        self.block_slots = block_slots
        self.close_delay = close_delay
        self.late_delay = late_delay
        self.late_max = max(late_max, late_delay)
        self._lock = threading.Lock()
        # reopened blocks: block id → (when it is merged, when its messages may go at the latest)
        self._late: dict[BlockId, tuple[float, float]] = {}
        self._written_ids: dict[BlockId, float] = {}  # block ids written → their close time
        self._waiting: dict[str, set[BlockId]] = {}  # held receipt → the reopened blocks it fed
        self._spans: dict[int, int] = {}
        self._open: dict[BlockId, dict[str, array]] = {}
        self._writing: dict[BlockId, dict[str, array]] = {}
        self._held: list[tuple[float, str]] = []  # heap of (deadline, receipt handle)

    def span(self, step: int) -> int:
        span = self._spans.get(step)
        if span is None:
            span = self._spans[step] = block_span(step, self.block_slots)
        return span

    def close_time(self, step: int, slot: int) -> float:
        """When the block holding ``slot`` closes: its end plus the close delay."""
        span = self.span(step)
        return slot - slot % span + span + self.close_delay

    def add_windows(self, windows: Mapping[tuple[int, int], Mapping[str, float]],
                    receipts: Iterable[tuple[str, Iterable[tuple[int, int]]]] = (),
                    now: Optional[float] = None) -> list[tuple[float, str]]:
        """Set ``{(step, slot_start): {metric: value}}`` and hold each receipt until its blocks close.

        ``receipts`` pairs each SQS receipt handle with the ``(step, slot_start)`` its message
        carried; the receipt becomes deletable when the last of those blocks has been written.
        ``now`` (the writer's clock) lets blocks written before wait to be merged once (module
        doc); without it they close at once. Returns ``(deadline, receipt)`` per receipt: when
        it will be deletable.
        """
        with self._lock:
            opened = self._open
            late = self._late
            late_now = now if self.late_delay > 0 else None  # None: late data is not held back
            for (step, slot), window in windows.items():
                span = self.span(step)
                start = slot - slot % span
                block = opened.get((step, start))
                if block is None:
                    block = opened[(step, start)] = {}
                    # written before, or closed before its first slot came: late either way
                    reopened: bool = late_now is not None and ((step, start) in self._written_ids
                                                               or late_now >= start + span + self.close_delay)
                else:  # open already: due when it was (its earlier receipts count on that)
                    reopened = (step, start) in late
                if reopened:
                    assert now is not None
                    merge_at, latest = late.get((step, start), (now, now + self.late_max))
                    late[(step, start)] = (min(max(merge_at, now + self.late_delay), latest), latest)
                place(block, window, (slot - start) // step, span // step)
            held = []
            for receipt, keys in receipts:
                block_ids = {(step, slot - slot % self.span(step)) for step, slot in keys}
                waits_on = block_ids & late.keys()
                if waits_on:  # a later batch may push their merge back: checked again when due
                    self._waiting[receipt] = waits_on
                held.append((max(self._due_at(block_id) for block_id in block_ids), receipt))
            for entry in held:
                heapq.heappush(self._held, entry)
        return held

    def _due_at(self, block_id: BlockId) -> float:
        reopened = self._late.get(block_id)
        return reopened[0] if reopened is not None else self.close_time(*block_id)

    def take_due(self, now: float) -> DueBlocks:
        """Move the blocks closed by ``now`` to *writing*; with the receipts due by ``now``."""
        due = DueBlocks()
        with self._lock:
            for block_id in [b for b in self._open if self._due_at(b) <= now]:
                blocks = self._open.pop(block_id)
                self._late.pop(block_id, None)
                due.blocks[block_id] = blocks
                self._merge_into(self._writing, block_id, blocks)
            later = []
            while self._held and self._held[0][0] <= now:
                deadline, receipt = heapq.heappop(self._held)
                waiting = self._waiting.get(receipt)
                if waiting is not None:
                    pending = [self._late[block_id][0] for block_id in waiting if block_id in self._late]
                    if pending:  # its reopened block's merge was pushed back: wait for it
                        later.append((max(pending), receipt))
                        continue
                    del self._waiting[receipt]
                due.receipts.append((deadline, receipt))
            for entry in later:
                heapq.heappush(self._held, entry)
        return due

    def written(self, due: DueBlocks) -> None:
        """``due`` is stored: forget its blocks (cache queries now find them in DynamoDB)."""
        with self._lock:
            for block_id, close in [(b, self.close_time(*b)) for b in due.blocks]:
                self._written_ids[block_id] = close
            if len(self._written_ids) > WRITTEN_IDS_KEPT:  # the oldest ones only lose coalescing
                for block_id in sorted(self._written_ids, key=self._written_ids.__getitem__)[:WRITTEN_IDS_KEPT // 2]:
                    del self._written_ids[block_id]
            for block_id, metrics in due.blocks.items():
                writing = self._writing.get(block_id)
                if writing is None:
                    continue
                for metric, values in metrics.items():
                    if writing.get(metric) is values:
                        del writing[metric]
                if not writing:
                    del self._writing[block_id]

    def restore(self, due: DueBlocks) -> None:
        """Writing ``due`` failed: reopen its blocks (newer slots win) and hold its receipts again."""
        with self._lock:
            for block_id, metrics in due.blocks.items():
                writing = self._writing.get(block_id, {})
                for metric, values in metrics.items():
                    if writing.get(metric) is values:
                        del writing[metric]
                if not writing:
                    self._writing.pop(block_id, None)
                self._merge_into(self._open, block_id, metrics, keep_existing=True)
                self._late.pop(block_id, None)  # due at once: receipts restored may be due already
            for entry in due.receipts:
                heapq.heappush(self._held, entry)

    @staticmethod
    def _merge_into(target: dict[BlockId, dict[str, array]], block_id: BlockId,
                    metrics: dict[str, array], keep_existing: bool = False) -> None:
        block = target.setdefault(block_id, {})
        for metric, values in metrics.items():
            present = block.get(metric)
            if present is None:
                block[metric] = values
                continue
            newer, older = (present, values) if keep_existing else (values, present)
            merged = array("d", older)
            for index, value in enumerate(newer):
                if value == value:
                    merged[index] = value
            block[metric] = merged

    def points(self, metrics: Sequence[str], start: float, end: float) -> dict[str, dict[int, list]]:
        """Held slots of ``metrics`` in ``[start, end)``: ``{metric: {step: [[slot_start, value], …]}}``.

        What a finder merges over DynamoDB's answer: slots not written yet (or being written).
        """
        wanted = set(metrics)
        found: dict[str, dict[int, dict[int, float]]] = {}
        with self._lock:
            for source in (self._writing, self._open):  # open blocks hold the newer values
                for (step, block_start), block in source.items():
                    span = self.span(step)
                    if block_start + span <= start or block_start >= end:
                        continue
                    for metric in [m for m in wanted if m in block]:
                        for index, value in enumerate(block[metric]):
                            ts = block_start + index * step
                            if value == value and start <= ts < end:
                                found.setdefault(metric, {}).setdefault(step, {})[ts] = value
        return {metric: {step: sorted(map(list, slots.items())) for step, slots in steps.items()}
                for metric, steps in found.items()}

    @property
    def open_blocks(self) -> int:
        """Blocks (one metric each) held in memory, open or being written."""
        with self._lock:
            return sum(map(len, self._open.values())) + sum(map(len, self._writing.values()))

    @property
    def held_messages(self) -> int:
        """SQS messages waiting for their blocks to be written."""
        with self._lock:
            return len(self._held)
