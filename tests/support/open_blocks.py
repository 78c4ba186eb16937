"""Open blocks slot by slot, for tests: what turokd sets a window at a time, and what a close takes."""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

from turok_core.turokd.open_blocks import DueBlocks, OpenBlocks


def add_slots(blocks: OpenBlocks, slots: Mapping[tuple[str, int, int], float],
              receipts: Iterable[tuple[str, Iterable[tuple[int, int]]]] = (),
              now: Optional[float] = None) -> list[tuple[float, str]]:
    """``OpenBlocks.add_windows`` for ``{(metric, step, slot_start): value}``."""
    windows: dict[tuple[int, int], dict[str, float]] = {}
    for (metric, step, slot), value in slots.items():
        windows.setdefault((step, slot), {})[metric] = value
    return blocks.add_windows(windows, receipts, now)


def rows(due: DueBlocks) -> list[tuple[str, int, int, dict[int, float]]]:
    """``(metric, step, block_start, {slot index: value})`` per block taken."""
    return [(metric, step, start, {i: v for i, v in enumerate(values) if v == v})
            for (step, start), metrics in due.blocks.items() for metric, values in metrics.items()]
