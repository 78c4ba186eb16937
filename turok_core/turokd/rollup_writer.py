"""turokd's rollups: coarse blocks recomputed from the stored finer archive when they close.

When a block of archive ``L`` is written, the blocks of archive ``L + 1`` it overlaps become
*pending*. A pending coarse block is recomputed once, when it closes (its end plus the close
delay), wholly from the finer slots stored in DynamoDB, and written with one merge; the blocks
of ``L + 2`` it overlaps then become pending in turn. So every coarse block is written once per
close, not once per finer write, which is what keeps rollups cheap (``open_blocks.py`` says why).

Correctness, as whisper computes (``rollup.py``): a coarse slot is the aggregate of the finer
slots it covers, written only when their known fraction reaches ``xFilesFactor``; otherwise the
stored coarse slot is left as it was. Recomputing from stored data makes replays, late points
and several turokd instances harmless: the same finer data gives the same coarse value. After
writing, a stage reads the finer slots again and recomputes the coarse slots whose input changed
meanwhile (another turokd's write), until a read shows no change (the race ``rollup.py`` tells).

Spans nest (a finer block span divides a coarser one when both divide a day and the block slot
count is the same), so the last finer block of a coarse block closes when the coarse block does:
a tick that writes it also writes the coarse block, before the SQS messages are deleted. The
pending set lives in memory; what a crash can lose is stated in README.md ("Rollups").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from turok_core.model.schemas import PolicyCache, SchemaSet
from turok_core.storage.block_layout import block_span
from turok_core.storage.tables import BlockStore, WriteStats
from turok_core.turokd.rollup import rollup_slots

ROLLUP_VERIFY_ROUNDS = 8  # recomputations of coarse blocks whose finer data keeps changing under us

WrittenBlock = tuple[str, int, int]  # (metric, step, block start)


@dataclass(frozen=True)
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


class PendingRollups:
    """Coarse blocks whose finer data changed, each due when it closes."""

    def __init__(self, schemas: SchemaSet, block_slots: int, close_delay: float) -> None:
        self._policy = PolicyCache(schemas.policy_for)
        self._block_slots = block_slots
        self._close_delay = close_delay
        self._pending: dict[RollupPlan, float] = {}  # plan → close time

    def __len__(self) -> int:
        return len(self._pending)

    def note_written(self, blocks: Iterable[WrittenBlock]) -> None:
        """Blocks just written: the coarser blocks they overlap become pending.

        A block whose step is not an archive of its metric's policy (or of a metric no schema
        matches) rolls up nowhere; a block of the coarsest archive neither.
        """
        for metric, step, start in blocks:
            policy = self._policy(metric)
            if policy is None:
                continue
            archives = policy.archives
            for level in range(len(archives) - 1):
                if archives[level].step != step:
                    continue
                coarse_step = archives[level + 1].step
                coarse_span = block_span(coarse_step, self._block_slots)
                end = start + block_span(step, self._block_slots)
                first = start - start % coarse_span
                for coarse_start in range(first, end, coarse_span):
                    plan = RollupPlan(metric, level, step, coarse_step, coarse_start, coarse_start + coarse_span,
                                      policy.aggregation_type, policy.x_files_factor)
                    self._pending[plan] = coarse_start + coarse_span + self._close_delay
                break

    def take_due(self, now: float) -> list[RollupPlan]:
        """The due plans of the finest level that has any (coarser levels wait for their input)."""
        due = [plan for plan, closes in self._pending.items() if closes <= now]
        if not due:
            return []
        level = min(plan.level for plan in due)
        due = [plan for plan in due if plan.level == level]
        for plan in due:
            del self._pending[plan]
        return due

    def restore(self, plans: Iterable[RollupPlan], now: float) -> None:
        """Recomputing ``plans`` failed: keep them pending, due again at once."""
        for plan in plans:
            self._pending[plan] = min(self._pending.get(plan, now), now)


def _covered(finer: dict[int, dict], plan: RollupPlan) -> list:
    """The finer values a plan reads, in time order."""
    values = finer[plan.finer_step].get(plan.metric, {})
    return [values.get(t) for t in range(plan.start, plan.end, plan.finer_step)]


def _read_finer(store: BlockStore, plans: list[RollupPlan]) -> dict[int, dict]:
    ranges: dict[int, list[tuple[str, int, int]]] = {}
    for plan in plans:
        ranges.setdefault(plan.finer_step, []).append((plan.metric, plan.start, plan.end))
    return {step: store.fetch_slots(step, wanted, consistent=True) for step, wanted in ranges.items()}


def rollup_blocks(store: BlockStore, plans: list[RollupPlan], stats: Optional[WriteStats] = None
                  ) -> tuple[list[WrittenBlock], int]:
    """Recompute and write the coarse blocks of ``plans`` (one level per metric).

    One consistent batched read of the finer slots, one merge write of every coarse slot that
    gets a value, then the verification reads (module docstring). Returns the coarse blocks
    written (for the next level) and the number of coarse slot values written.
    """
    written_blocks: dict[WrittenBlock, None] = {}
    slots_written = 0
    finer = _read_finer(store, plans)
    for _round in range(ROLLUP_VERIFY_ROUNDS):
        writes: list[tuple[str, int, int, float]] = []
        for plan in plans:
            values = rollup_slots(finer[plan.finer_step].get(plan.metric, {}), plan.finer_step, plan.coarse_step,
                                  range(plan.start, plan.end, plan.coarse_step), plan.aggregation_type,
                                  plan.x_files_factor)
            if values:
                writes.extend((plan.metric, plan.coarse_step, start, value) for start, value in values)
                written_blocks[(plan.metric, plan.coarse_step, plan.start)] = None
        if writes:
            # a coarse block is written when it closes: almost always for the first time
            stage_stats = store.write_slots(writes, assume_new=True)
            if stats is not None:
                stats.add(stage_stats)
            slots_written += len(writes)
        again = _read_finer(store, plans)
        plans = [plan for plan in plans if _covered(again, plan) != _covered(finer, plan)]
        if not plans:
            break
        finer = again
    return list(written_blocks), slots_written
