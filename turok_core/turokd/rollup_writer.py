"""turokd's rollups from DynamoDB: coarse blocks recomputed from the stored finer archive.

``coarse_blocks.py`` decides when a coarse block closes and whether turokd holds its input; when
it does not (after a restart or a lease move, late data merged into a finer block, no ownership
hook), the block's ``RollupPlan`` comes here and is recomputed wholly from the finer slots stored
in DynamoDB, and written with one merge.

Correctness, as whisper computes (``rollup.py``): a coarse slot is the aggregate of the finer
slots it covers, written only when their known fraction reaches ``xFilesFactor``; otherwise the
stored coarse slot is left as it was. Recomputing from stored data makes replays, late points
and several turokd instances harmless: the same finer data gives the same coarse value. After
writing, a stage reads the finer slots again and recomputes the coarse slots whose input changed
meanwhile (another turokd's write), until a read shows no change (the race ``rollup.py`` tells);
a writer holding the partition's lease has no such race and skips that read. Given ``now``, a
settled coarse slot (``rollup.settled_before``) is only set where none is stored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from turok_core.storage.tables import BlockStore, WriteStats
from turok_core.turokd.rollup import rollup_slots, settled_before

ROLLUP_VERIFY_ROUNDS = 8  # recomputations of coarse blocks whose finer data keeps changing under us

WrittenBlock = tuple[str, int, int]  # (metric, step, block start)


@dataclass(frozen=True, slots=True)  # one per pending coarse block of each metric
class RollupPlan:
    """One coarse block of one metric to recompute from archive ``level`` (the finer one)."""
    metric: str
    level: int
    finer_step: int
    coarse_step: int
    start: int
    end: int
    aggregation_type: str
    x_files_factor: float
    finer_retention: int = 0  # the finer archive's retention (0: unknown, nothing settled)


def _covered(finer: dict[int, dict], plan: RollupPlan) -> list:
    """The finer values a plan reads, in time order."""
    values = finer[plan.finer_step].get(plan.metric, {})
    return [values.get(t) for t in range(plan.start, plan.end, plan.finer_step)]


def _changed(before: dict[int, dict], after: dict[int, dict], plan: RollupPlan) -> bool:
    """The finer values a plan reads differ between two reads (a whole-metric comparison first:
    unchanged, the usual answer, costs no Python step per slot)."""
    step = plan.finer_step
    if before[step].get(plan.metric, {}) == after[step].get(plan.metric, {}):
        return False
    return _covered(after, plan) != _covered(before, plan)


def _read_finer(store: BlockStore, plans: list[RollupPlan]) -> dict[int, dict]:
    ranges: dict[int, list[tuple[str, int, int]]] = {}
    for plan in plans:
        ranges.setdefault(plan.finer_step, []).append((plan.metric, plan.start, plan.end))
    return {step: store.fetch_slots(step, wanted, consistent=True) for step, wanted in ranges.items()}


def rollup_blocks(store: BlockStore, plans: list[RollupPlan], stats: Optional[WriteStats] = None,
                  assume_new: bool = True, exclusive: bool = False,
                  now: Optional[float] = None) -> tuple[list[WrittenBlock], int]:
    """Recompute and write the coarse blocks of ``plans`` (one level per metric).

    ``assume_new``: try put-if-absent before merging (a coarse block written when it closes is
    almost always new); off when the caller knows the blocks exist. ``exclusive``: the caller
    alone writes these blocks (``BlockStore.write_blocks``). ``now``: settled slots are only
    filled where empty (module docstring); None settles nothing.

    One consistent batched read of the finer slots, one merge write of every coarse slot that
    gets a value, then the verification reads (module docstring). Returns the coarse blocks
    written (for the next level) and the number of coarse slot values written.
    """
    written_blocks: dict[WrittenBlock, None] = {}
    slots_written = 0
    finer = _read_finer(store, plans)
    for _round in range(ROLLUP_VERIFY_ROUNDS):
        # a plan is one coarse block: its slots go as one row, by index (no per-slot regrouping);
        # settled slots apart, set only where none is stored
        writes: list[tuple[str, int, int, dict[int, float]]] = []
        settled: list[tuple[str, int, int, dict[int, float]]] = []
        for plan in plans:
            values = rollup_slots(finer[plan.finer_step].get(plan.metric, {}), plan.finer_step, plan.coarse_step,
                                  range(plan.start, plan.end, plan.coarse_step), plan.aggregation_type,
                                  plan.x_files_factor)
            if values:
                step = plan.coarse_step
                cutoff = settled_before(now, plan.finer_retention) if now is not None else -math.inf
                recomputed = {(t - plan.start) // step: v for t, v in values if t >= cutoff}
                settled_part = {(t - plan.start) // step: v for t, v in values if t < cutoff}
                if recomputed:
                    writes.append((plan.metric, step, plan.start, recomputed))
                if settled_part:
                    settled.append((plan.metric, step, plan.start, settled_part))
                written_blocks[(plan.metric, plan.coarse_step, plan.start)] = None
        for part, fill_gaps in ((writes, False), (settled, True)):
            if part:
                stage_stats = store.write_blocks(part, assume_new=assume_new, exclusive=exclusive, fill_gaps=fill_gaps)
                if stats is not None:
                    stats.add(stage_stats)
                slots_written += sum(len(row[3]) for row in part)
        if exclusive:
            break  # no other writer can have changed the finer slots since they were read
        again = _read_finer(store, plans)
        plans = [plan for plan in plans if _changed(finer, again, plan)]
        if not plans:
            break
        finer = again
    return list(written_blocks), slots_written
