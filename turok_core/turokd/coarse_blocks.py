"""turokd's coarse blocks: computed from the finer blocks it has just written, held until they close.

When a block of archive ``L`` is written, the blocks of archive ``L + 1`` it overlaps become
*pending*; each is written once, when it closes (its end plus the close delay), and the blocks of
``L + 2`` it overlaps become pending in turn. Spans nest, so the last finer block of a coarse
block closes when the coarse block does, in the same ``BlockWriter.close``, finer levels first.

A pending coarse block is computed in one of two ways:

- **from memory**, when turokd has every finer slot it covers: the metric is owned since
  before the coarse block began, or held with neither the coarse block's start nor its finer
  blocks' starts in the record of block starts read since (``fresh.py``, ``start_snapshots.py``),
  no block of this id was written before, and every
  finer block fed to it is known whole (put whole, or merged by this sole writer, which then
  knows the stored values). Each coarse slot lying inside one finer block is computed as that
  block is written (whisper's rule, ``rollup.py``); a coarse slot straddling two finer blocks
  keeps its finer values until the block closes. Finer blocks turokd never wrote hold nothing:
  it was their only writer. The coarse block is put whole.
- **from DynamoDB** otherwise (after a restart or a lease move, late data for a coarse block
  written already, no ownership hook): the plan goes to ``rollup_writer.rollup_blocks``, which
  reads the finer slots and merges (and, without a held lease, verifies against concurrent
  writers). Computing only the coarse slots a merged finer block covers was tried and left out
  for now: a turokd killed mid-stream then left coarse slots wrong (tests/e2e/test_turokd_kill.py).

Blocks of a metric's coarser archives (its levels 1 and up) are ``coarse_block_span`` long, at
the defaults twice the grid span at 1 minute (``block_layout.py``); a plan's start and end, the
finer blocks a coarse block covers and the end of a finer block that is itself coarse
(1 minute → 1 hour) all follow ``span_of``, the same rule ``BlockWriter`` writes base slots at a
coarse step by, so blocks of one metric and step never overlap.

Either way a coarse slot is whisper's aggregate of the finer slots it covers, written only when
their known fraction reaches ``xFilesFactor``, so both give the same bytes. The pending set lives
in memory, each block computed from memory holding its coarse slots encoded between finer blocks
(``CoarseBlock``); what a crash can lose is stated in docs/write-path.md. One thread at a time.
"""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, Iterable, Optional, Sequence, Union

from turok_core.model.schemas import MetricPolicy, PolicyCache, SchemaSet
from turok_core.storage.block_layout import archive_span, decode_into, encode_datapoints
from turok_core.turokd.fresh import COARSE, FreshBlocks
from turok_core.turokd.rollup import known_span, rollup_into, rollup_known, whisper_xff
from turok_core.turokd.rollup_writer import RollupPlan

NAN = math.nan
# (metric, step, block start, the block's slot values with NaN for gaps, or None: not known whole)
WrittenBlock = tuple[str, int, int, Optional[Sequence[float]]]


@dataclass(slots=True)  # one per pending coarse block of each metric: no __dict__ each
class CoarseBlock:
    """One pending coarse block of one metric.

    Between finer blocks its coarse slots are kept encoded (block format v2, as they will be
    stored; lossless): a 1-minute block (720 slots at the defaults) waits twelve hours for its
    last 10 s block, and its doubles would take 5.8 KB a metric all that time against ~1.6 KB for
    averages of two-decimal gauges (random doubles stay ~5.3 KB)."""
    plan: RollupPlan
    closes: float
    # coarse slot values (NaN: none yet), encoded between finer blocks; None: computed from DynamoDB
    values: Union[array, bytes, None]
    partial: dict[int, array] = field(default_factory=dict)  # straddling slot index → its finer values

    def _unpacked(self) -> array:
        values = self.values
        assert values is not None
        if isinstance(values, array):
            return values
        row = array("d", [NAN]) * ((self.plan.end - self.plan.start) // self.plan.coarse_step)
        decode_into(values, row, 0)
        return row

    def add_finer(self, start: int, values: Sequence[Optional[float]]) -> None:
        """A finer block known whole (gaps NaN or None): compute the coarse slots inside it that
        it has data for, keep the straddling ones."""
        coarse = self._unpacked()
        self._add_finer(coarse, start, values)
        self.values = encode_datapoints(coarse)

    def _add_finer(self, coarse: array, start: int, values: Sequence[Optional[float]]) -> None:
        plan = self.plan
        step, coarse_step = plan.finer_step, plan.coarse_step
        end = start + len(values) * step
        # only coarse slots with finer data can change (old blocks are mostly gaps): those from the
        # first known value's to the last's
        count, first, last = known_span(values)
        if not count:
            return
        low = max(start + first * step, plan.start)
        low -= low % coarse_step
        high = min(start + last * step + 1, plan.end)
        # the coarse slots wholly inside this block in one call (C for arrays); at most one at each end straddles
        inner = max(low, start + -start % coarse_step)
        inner_last = min(high - 1, end - coarse_step)
        inner_last -= inner_last % coarse_step
        edges: Iterable[int] = range(low, high, coarse_step)
        if inner_last >= inner:
            rollup_into(values, (inner - start) // step, coarse, (inner - plan.start) // coarse_step,
                        (inner_last - inner) // coarse_step + 1, coarse_step // step, plan.aggregation_type,
                        whisper_xff(plan.x_files_factor))
            edges = chain(range(low, inner, coarse_step), range(inner_last + coarse_step, high, coarse_step))
        for slot in edges:
            first_t, end_t = max(slot, start), min(slot + coarse_step, end)
            window = values[(first_t - start) // step:(end_t - start) // step]
            if not any(value is not None and value == value for value in window):
                continue
            index = (slot - plan.start) // coarse_step
            part = self.partial.get(index)
            if part is None:
                part = self.partial[index] = array("d", [NAN]) * (coarse_step // step)
            for t, value in zip(range(first_t, end_t, step), window):
                part[(t - slot) // step] = NAN if value is None else value

    def finish(self) -> array:
        """The coarse slot values, straddling slots included (finer blocks never written are gaps).

        The block keeps its slots encoded (and its straddling ones): the blocks of a boundary are
        finished a chunk at a time, and one whose write fails is finished again."""
        coarse = self._unpacked()
        for index, part in self.partial.items():
            value = _rolled(part, self.plan)
            if value is not None:
                coarse[index] = value
        return coarse


def _rolled(values: Sequence[Optional[float]], plan: RollupPlan) -> Optional[float]:
    """The coarse slot of these finer values: NaN below the xFilesFactor, None with no value at all."""
    known = [v for v in values if v is not None and v == v]  # a gap: None, or NaN (not equal to itself)
    if not known:
        return None
    value = rollup_known(known, len(values), plan.aggregation_type, whisper_xff(plan.x_files_factor))
    return NAN if value is None else value


class CoarseBlocks:
    """Coarse blocks whose finer data changed, each due when it closes."""

    def __init__(self, schemas: SchemaSet, block_slots: int, close_delay: float, fresh: FreshBlocks,
                 older: Optional[Callable[[str, int], Optional[MetricPolicy]]] = None,
                 coarse_block_slots: int = 0) -> None:
        """``older(metric, step)``: the policy of an older version of the schema files with an
        archive at ``step`` (``SchemaHistory.policy_with_step``), for blocks at a step the
        current files no longer have."""
        self._policy = PolicyCache(schemas.policy_for)
        self._older = older
        self._block_slots = block_slots
        self._coarse_block_slots = coarse_block_slots
        self._close_delay = close_delay
        self._fresh = fresh
        self._pending: dict[tuple[str, int, int], CoarseBlock] = {}  # (metric, coarse step, start)
        self._coarse_steps = {archive.step for _name, archives in schemas.archive_sets() for archive in archives[1:]}

    def use_schemas(self, schemas: SchemaSet, older: Optional[Callable[[str, int], Optional[MetricPolicy]]]) -> None:
        """Files edited while running: blocks written from now on roll up by ``schemas`` (pending
        coarse blocks keep the plan they were given)."""
        self._policy = PolicyCache(schemas.policy_for)
        self._older = older
        self._coarse_steps |= {archive.step for _name, archives in schemas.archive_sets() for archive in archives[1:]}

    def __len__(self) -> int:
        return len(self._pending)

    def backfilled(self, step: int, metrics: Iterable[str]) -> bool:
        """Some of ``metrics`` has ``step`` as a coarser archive, not its first: old points
        stored straight into it (``windows/buffer.py``, ``turokd/backfill.py``)."""
        if step not in self._coarse_steps:
            return False
        policy = self._policy
        return any(found is not None and found.step != step for found in map(policy, metrics))

    def _policy_at(self, metric: str, step: int) -> Optional[MetricPolicy]:
        """The metric's policy, or the older one with an archive at ``step`` when the current has none."""
        policy = self._policy(metric)
        if self._older is not None and (policy is None or all(a.step != step for a in policy.archives)):
            policy = self._older(metric, step)
        return policy

    def span(self, step: int, level: int) -> int:
        """Seconds per block of archive ``level`` at ``step`` (``block_layout.archive_span``)."""
        return archive_span(step, level, self._block_slots, self._coarse_block_slots)

    def span_of(self, metric: str, step: int) -> int:
        """Seconds per block of ``metric`` at ``step``: the coarse span where ``step`` is a coarser
        archive of its policy (as ``note_written`` finds it), else the grid span."""
        if step not in self._coarse_steps:
            return self.span(step, 0)
        policy = self._policy_at(metric, step)
        level = 0 if policy is None else next((i for i, a in enumerate(policy.archives) if a.step == step), 0)
        return self.span(step, level)

    def note_written(self, blocks: Iterable[WrittenBlock], now: float = -math.inf) -> None:
        """Blocks just written at ``now``: the coarser blocks they overlap become pending.

        A coarse block that has closed already (late data) is due at once: it is recomputed in
        the same ``BlockWriter.close`` as the finer blocks that changed it, before their messages
        are deleted, so a crash cannot leave it behind (the finer merges are the ones coalesced,
        ``open_blocks.py``).

        A block given with its values is known whole (put whole, or merged by this sole writer)
        and feeds coarse blocks computed from memory; one without (merged conditionally) makes
        them computed from DynamoDB. A block whose step is not an archive of its metric's policy
        rolls up as the newest older version of the files with that step said (``older``: data
        sent before an edit), else nowhere, like a block of a metric no schema matches; a block
        of the coarsest archive neither.
        """
        for metric, step, start, values in blocks:
            policy = self._policy_at(metric, step)
            if policy is None:
                continue
            archives = policy.archives
            for level in range(len(archives) - 1):
                if archives[level].step != step:
                    continue
                coarse_step = archives[level + 1].step
                coarse_span = self.span(coarse_step, level + 1)
                end = start + self.span(step, level)
                for coarse_start in range(start - start % coarse_span, end, coarse_span):
                    key = (metric, coarse_step, coarse_start)
                    pending = self._pending.get(key)
                    if pending is None:
                        plan = RollupPlan(metric, level, step, coarse_step, coarse_start, coarse_start + coarse_span,
                                          policy.aggregation_type, policy.x_files_factor, archives[level].retention)
                        in_memory = (values is not None
                                     and self._fresh.fresh(COARSE, metric, coarse_step, coarse_start)
                                     and self._finer_sole(metric, step, level, coarse_start, coarse_span))
                        pending = self._pending[key] = CoarseBlock(
                            plan, coarse_start + coarse_span + self._close_delay,
                            array("d", [NAN]) * (coarse_span // coarse_step) if in_memory else None)
                    if values is None:
                        pending.values, pending.partial = None, {}
                    elif pending.values is not None:
                        pending.add_finer(start, values)
                break

    def still_sole(self, plan: RollupPlan) -> bool:
        """No writer but this turokd can have written the plan's coarse block or its finer blocks
        (checked again when a block computed in memory is written: an import may have begun)."""
        return self._fresh.sole(plan.metric, plan.coarse_step, plan.start) \
            and self._finer_sole(plan.metric, plan.finer_step, plan.level, plan.start, plan.end - plan.start)

    def _finer_sole(self, metric: str, step: int, level: int, coarse_start: int, coarse_span: int) -> bool:
        """Every finer block (archive ``level``) under a coarse block is this turokd's alone: owned
        since before the coarse block began, or each start unnamed by the record (``fresh.FreshBlocks.sole``)."""
        span = self.span(step, level)
        return self._fresh.sole_all(metric, step, range(coarse_start - coarse_start % span,
                                                        coarse_start + coarse_span, span))

    def take_due(self, now: float) -> list[CoarseBlock]:
        """The due blocks of the finest level that has any (coarser levels wait for their input)."""
        due = [pending for pending in self._pending.values() if pending.closes <= now]
        if not due:
            return []
        level = min(pending.plan.level for pending in due)
        due = [pending for pending in due if pending.plan.level == level]
        for pending in due:
            del self._pending[(pending.plan.metric, pending.plan.coarse_step, pending.plan.start)]
        return due

    def restore(self, blocks: Iterable[CoarseBlock], now: float) -> None:
        """Writing ``blocks`` failed: keep them pending, due again at once."""
        for block in blocks:
            plan = block.plan
            key = (plan.metric, plan.coarse_step, plan.start)
            if key in self._pending:  # fed again meanwhile: only DynamoDB has all of it now
                block.values, block.partial = None, {}
            block.closes = min(block.closes, now)
            self._pending[key] = block
