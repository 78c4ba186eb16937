"""turokd's core, free of Twisted: hold decoded batches in open blocks, write each block once.

Slots are *set*, never added to, so a redelivered message writes the same values again and
leaves the stored data unchanged. ``BlockWriter.hold`` decodes a batch (``decode.py``), puts its
slots into the open blocks (``open_blocks.py``) and holds its SQS messages; ``close`` writes the
blocks that have closed, then the coarse blocks that close with them (``coarse_blocks.py``), and
only then hands out the messages that may be deleted.

A closed block is *put* whole with BatchWriteItem and no read when this turokd alone writes it
and never wrote it before (``fresh.py``: the ``owned_since`` hook, which the service wires to
partition leases); any other block is merged into the stored item (read, slots set, put back):
in batches without conditions while the partition's lease is held, else with a conditional put.
Coarse blocks are computed from the finer blocks just written when turokd knows them whole (put
whole, or merged by it as the partition's sole writer), else from the finer slots read back from
DynamoDB (``rollup_writer.py``). With ``route_old``, slot values too old for their step's archive
move to the archive covering their age first (``backfill.py``). Open blocks are keyed by the grid
span; a block at a step that is a coarser archive of its metric is written into the longer
coarse block holding it (``block_layout.coarse_block_span``), as the rollups write that archive.
Every metric's block closes at the same boundary, so whole blocks are put, and coarse blocks
finished, ``PUT_CHUNK`` at a time: what a close adds to turokd's memory is bounded by the chunk,
not by the metrics held.
"""
from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import eq
from typing import Callable, Optional, Sequence

from turok_core.model.config import TurokConfig
from turok_core.model.schema_history import SchemaHistory
from turok_core.model.schemas import MetricPolicy, PolicyCache, SchemaSet
from turok_core.storage.tables import BlockStore, WriteStats
from turok_core.storage.writes import MergedBlocks
from turok_core.turokd.backfill import route_by_age, shortest_retentions
from turok_core.turokd.coarse_blocks import CoarseBlock, CoarseBlocks, WrittenBlock
from turok_core.turokd.decode import DecodedBatch, decode_batch
from turok_core.turokd.fresh import BACKFILL, BASE, COARSE, FreshBlocks, OwnedSince, SharedBefore, Unwritten
from turok_core.turokd.open_blocks import DueBlocks, OpenBlocks
from turok_core.turokd.rollup import known_span, settled_before
from turok_core.turokd.rollup_writer import RollupPlan, rollup_blocks
from turok_core.wire.queues import ReceivedMessage

# blocks encoded per put_blocks call: every metric's block closes at the same boundary, and the
# items of all of them encoded before the first is sent would add their bytes to turokd's RSS peak
PUT_CHUNK = 2000
Row = tuple[str, int, int, dict[int, float]]  # (metric, step, block start, {slot index: value})
WholeBlock = tuple[str, int, int, Sequence[float]]  # (metric, step, block start, every slot, NaN gaps)


@dataclass
class CloseResult:
    """What one ``BlockWriter.close`` stored, and the SQS messages that may now be deleted."""
    deletable: list[str] = field(default_factory=list)
    blocks: int = 0  # base blocks written (put or merged) by this close
    slots: int = 0  # base slot values in them
    rollup_slots: int = 0  # coarse slot values written
    stats: WriteStats = field(default_factory=WriteStats)


def _known(values: Sequence[float]) -> int:
    """How many slots of a whole block hold a value (NaN is a gap), without a Python step per slot."""
    return known_span(values)[0]


def _row(metric: str, step: int, start: int, values: Sequence[float]) -> Row:
    """The block's known slots (NaN is a gap), picked without a Python step per slot."""
    known = list(map(eq, values, values))  # False for NaN only
    return metric, step, start, dict(zip(compress(range(len(values)), known), compress(values, known)))


def _split_settled(rows: list[Row], plans: dict[tuple[str, int], RollupPlan],
                   now: Optional[float]) -> tuple[list[Row], list[Row]]:
    """Coarse rows split into the slots rollups set and the settled ones they only fill."""
    if now is None:
        return rows, []
    recent: list[Row] = []
    settled: list[Row] = []
    for metric, step, start, values in rows:
        cutoff = settled_before(now, plans[(metric, start)].finer_retention)
        if start >= cutoff:
            recent.append((metric, step, start, values))
            continue
        first = math.ceil((cutoff - start) / step)  # the first slot index not settled
        old = {index: value for index, value in values.items() if index < first}
        new = {index: value for index, value in values.items() if index >= first}
        recent += [(metric, step, start, new)] if new else []
        settled += [(metric, step, start, old)] if old else []
    return recent, settled


def _older(history: Optional[SchemaHistory]) -> Optional[Callable[[str, int], Optional[MetricPolicy]]]:
    """The policy lookup of older schema versions, when there are any."""
    return history.policy_with_step if history is not None and len(history.versions) > 1 else None


class BlockWriter:
    """turokd's core: open blocks in memory, written once when they close, then rolled up.

    ``clock`` is the one time source (epoch seconds), injectable so a simulated day runs in
    minutes. ``owned_since(metric)``: since when this turokd is the only writer of the metric's
    partition (None or no hook: unknown, so every block is merged). ``hold`` may be called from
    several threads; ``close`` from one at a time. ``route_old`` (with ``schemas``): values
    too old for their step's archive go to the archive covering their age, by ``clock``
    (``backfill.py``), and coarse slots settle (``rollup.settled_before``). ``history``: the
    schema files in force before, so a block at a step only an older version had rolls up as
    that version said. ``shared_before()``: blocks starting before
    it are written by a running import too (``fresh.py``). ``unwritten(metric, step, start)``: no
    other writer wrote that block (``start_snapshots.py``), so it is put whole even when older
    than the ownership.
    """

    def __init__(self, store: BlockStore, config: TurokConfig, schemas: Optional[SchemaSet] = None,
                 clock: Callable[[], float] = time.time, owned_since: Optional[OwnedSince] = None,
                 route_old: bool = False, history: Optional[SchemaHistory] = None,
                 shared_before: Optional[SharedBefore] = None, unwritten: Optional[Unwritten] = None) -> None:
        self.store = store
        self.clock = clock
        self._routing = (PolicyCache(schemas.policy_for), shortest_retentions(schemas)) \
            if route_old and schemas is not None else None
        self.fresh = FreshBlocks(owned_since, shared_before=shared_before, unwritten=unwritten)
        self.open = OpenBlocks(config.block_slots, config.block_close_delay_seconds,
                               config.late_merge_delay_seconds, config.late_merge_max_seconds)
        self.rollups = CoarseBlocks(schemas, config.block_slots, config.block_close_delay_seconds, self.fresh,
                                    _older(history), config.coarse_block_slots) if schemas is not None else None

    def use_schemas(self, schemas: SchemaSet, history: Optional[SchemaHistory] = None) -> None:
        """The schema files were edited while running: slots held from now on are routed, and
        blocks written from now on rolled up, by ``schemas`` (``history``: with the versions before)."""
        if self._routing is not None:
            self._routing = (PolicyCache(schemas.policy_for), shortest_retentions(schemas))
        if self.rollups is not None:
            self.rollups.use_schemas(schemas, _older(history))

    def hold(self, received: Sequence[ReceivedMessage]) -> DecodedBatch:
        """Hold a batch's slots in the open blocks; its messages wait for ``close``."""
        batch = decode_batch(received)
        now = self.clock()
        if self._routing is not None and batch.windows:
            batch.moved = route_by_age(batch, self._routing[0], self._routing[1], now)
        batch.held = self.open.add_windows(batch.windows, batch.accepted, now)
        return batch

    def close(self, now: Optional[float] = None) -> CloseResult:
        """Write every block closed by ``now`` (default: the clock), then the due coarse blocks.

        Raises when a write fails; then the blocks stay open, the messages held and the coarse
        blocks pending, and the next ``close`` tries again (a rewrite of what was written is a no-op).
        """
        now = self.clock() if now is None else now
        result = CloseResult()
        due = self.open.take_due(now)
        try:
            with self.fresh.one_view():  # ownership asked once per metric, not per block and plan
                written = self._write_base(due, result)
                if self.rollups is not None:
                    self.rollups.note_written(written, now)
                self._roll_up(now, result)
        except BaseException:
            self.open.restore(due)
            raise
        self.open.written(due)
        if not math.isinf(now):
            self.fresh.forget_before(now)
        result.deletable = due.receipt_handles
        return result

    def close_all(self) -> CloseResult:
        """Write every block, open or not, and every pending coarse block (shutdown, tools)."""
        return self.close(math.inf)

    def _write_base(self, due: DueBlocks, result: CloseResult) -> list[WrittenBlock]:
        """Put the fresh blocks, merge the others; the blocks written, with values when put."""
        fresh: list[WholeBlock] = []
        merged: list[WrittenBlock] = []  # may be new (put-if-absent first)
        rewritten: list[WrittenBlock] = []  # ids this writer wrote: read and merged at once
        exclusive: list[WrittenBlock] = []  # held partition, not fresh: batched read, merge, put
        backfilled: set[tuple[int, int]] = set()  # (step, block start) holding slots of a coarser archive
        for (step, start), metric, values in self._by_archive(due, backfilled):
            # a coarse block put whole before may share the id of a backfilled block: merge then
            written = self.fresh.written(BASE, step, start) or self.fresh.written(COARSE, step, start)
            block = (metric, step, start, values)
            if not written and self.fresh.sole(metric, step, start):
                fresh.append(block)
            elif self.fresh.held(metric, start):
                exclusive.append(block)
            else:
                (rewritten if written else merged).append(block)
        if not fresh and not merged and not rewritten and not exclusive:
            return []
        slots = 0
        known: MergedBlocks = {}  # the exclusive merges' blocks as stored now: known whole
        if fresh:  # whole arrays, gaps NaN: no per-block dict of the known slots
            self._put(fresh, result)
            slots += sum(_known(values) for *_key, values in fresh)
        for blocks, write in ((merged, self.store.write_blocks),
                              (rewritten, lambda rows: self.store.write_blocks(rows, assume_new=False)),
                              (exclusive, lambda rows: self.store.write_blocks(rows, assume_new=False,
                                                                                exclusive=True, merged=known))):
            part = [_row(metric, step, start, values) for metric, step, start, values in blocks if values is not None]
            if part:
                result.stats.add(write(part))
                slots += sum(len(values) for *_key, values in part)
        merged += rewritten
        for step, start in {key[1:3] for key in chain(fresh, merged, exclusive)}:
            self.fresh.mark(BASE, step, [start])
        for step, start in backfilled:
            # the coarse block of this id (rolled up from the finer archive) must merge into
            # the backfilled slots, not be put whole over them
            self.fresh.mark(BACKFILL, step, [start])
        result.blocks += len(fresh) + len(merged) + len(exclusive)
        result.slots += slots
        return (fresh + [(metric, step, start, None) for metric, step, start, _values in merged]
                + [(metric, step, start, known.get((metric, step, start)))
                   for metric, step, start, _values in exclusive])

    def _by_archive(self, due: DueBlocks,
                    backfilled: set[tuple[int, int]]) -> list[tuple[tuple[int, int], str, Sequence[float]]]:
        """``((step, block start), metric, values)`` of each due block, as stored: open blocks are
        keyed by the grid (``block_span``), but where ``step`` is a coarser archive of the metric
        (old points, ``backfill.py``) its block is the longer coarse one (``coarse_block_span``),
        as the rollups write it: the grid block goes into it at its offset (two grid blocks due
        together into one). The ids holding such slots are added to ``backfilled``."""
        rollups = self.rollups
        found: list[tuple[tuple[int, int], str, Sequence[float]]] = []
        longer: dict[tuple[str, int, int], array] = {}
        for (step, start), metrics in due.blocks.items():
            if rollups is None or not rollups.backfilled(step, metrics):
                found.extend(((step, start), metric, values) for metric, values in metrics.items())
                continue
            grid = rollups.span(step, 0)
            for metric, values in metrics.items():
                span = rollups.span_of(metric, step)
                if span != grid:
                    block = start - start % span
                    row = longer.get((metric, step, block))
                    if row is None:
                        row = longer[(metric, step, block)] = array("d", [math.nan]) * (span // step)
                    offset = (start - block) // step
                    row[offset:offset + len(values)] = array("d", values)
                    backfilled.add((step, block))
                    continue
                found.append(((step, start), metric, values))
                if rollups.backfilled(step, [metric]):
                    backfilled.add((step, start))
        found.extend(((step, start), metric, row) for (metric, step, start), row in longer.items())
        return found

    def _put(self, blocks: list[WholeBlock], result: CloseResult) -> None:
        """Put whole blocks, ``PUT_CHUNK`` at a time (a failure leaves the rest for the next close:
        putting a block again writes the same bytes)."""
        for first in range(0, len(blocks), PUT_CHUNK):
            result.stats.add(self.store.put_blocks(blocks[first:first + PUT_CHUNK]))

    def _roll_up(self, now: float, result: CloseResult) -> None:
        if self.rollups is None:
            return
        while True:
            due = self.rollups.take_due(now)
            if not due:
                return
            # a chunk at a time: a coarse block's slots are held encoded until it is finished, and
            # every metric's coarse block closes at the same boundary (and at shutdown). The block
            # ids count as written once the whole level is, so every chunk is put whole alike.
            for first in range(0, len(due), PUT_CHUNK):
                try:
                    written = self._write_coarse(due[first:first + PUT_CHUNK], result, self._settled_at(now))
                except BaseException:
                    self._mark_coarse(due[:first])  # written: later data for them merges
                    self.rollups.restore(due[first:], self.clock() if math.isinf(now) else now)
                    raise
                self.rollups.note_written(written, now)
            self._mark_coarse(due)

    def _mark_coarse(self, blocks: list[CoarseBlock]) -> None:
        for block in blocks:
            self.fresh.mark(COARSE, block.plan.coarse_step, [block.plan.start])

    def _settled_at(self, now: float) -> Optional[float]:
        """The time coarse slots are settled at (``rollup.settled_before``): only when old slots
        are routed by age (points that old go to the coarse archive, as in whisper), and never
        by ``close_all``'s infinity. None: nothing settled."""
        if self._routing is None:
            return None
        return self.clock() if math.isinf(now) else now

    def _write_coarse(self, due: list[CoarseBlock], result: CloseResult,
                      settled_at: Optional[float]) -> list[WrittenBlock]:
        """Write one level's due coarse blocks: computed in memory (put or merged) or from DynamoDB;
        a slot settled at ``settled_at`` (``rollup.settled_before``) only where none is stored."""
        rollups = self.rollups
        assert rollups is not None
        puts: list[WholeBlock] = []
        merges: list[Row] = []
        plans = []
        held = all(self.fresh.held(block.plan.metric, block.plan.start) for block in due)
        for block in due:
            # computed in memory while sole writer, but an import began meanwhile: read it back
            if block.values is None or not rollups.still_sole(block.plan):
                plans.append(block.plan)
                continue
            plan, values = block.plan, block.finish()
            if not _known(values):
                continue  # nothing reached the xFilesFactor: the coarse block stays as it is
            # else merge, not replace: a block of this id was written, as a coarse block, with old
            # points, or as a base block (of a metric whose schema edit made this step coarse, or
            # that a coarse span longer than the grid covers; the id is per step, not per metric)
            if not any(self.fresh.written(kind, plan.coarse_step, plan.start) for kind in (COARSE, BACKFILL, BASE)):
                puts.append((plan.metric, plan.coarse_step, plan.start, values))
            else:
                merges.append(_row(plan.metric, plan.coarse_step, plan.start, values))
        written: list[WrittenBlock] = []
        if puts:
            self._put(puts, result)
            written += puts
        if merges:
            # merged without conditions while the partition is held; then known whole for the next level
            known: MergedBlocks = {}
            recent, settled = _split_settled(merges, {(b.plan.metric, b.plan.start): b.plan for b in due}, settled_at)
            for rows, fill_gaps in ((recent, False), (settled, True)):
                if rows:
                    result.stats.add(self.store.write_blocks(rows, assume_new=False, exclusive=held,
                                                             fill_gaps=fill_gaps, merged=known if held else None))
            written += [(metric, step, start, known.get((metric, step, start)))
                        for metric, step, start, _values in merges]
        result.rollup_slots += sum(_known(values) for *_key, values in puts) + sum(len(row[3]) for row in merges)
        if plans:
            # coarse blocks written before exist: merge without trying put-if-absent first
            exist = all(self.fresh.written(COARSE, plan.coarse_step, plan.start) for plan in plans)
            read_back, slots = rollup_blocks(self.store, plans, result.stats, assume_new=not exist, exclusive=held,
                                             now=settled_at)
            result.rollup_slots += slots
            written += [(metric, step, start, None) for metric, step, start in read_back]
        return written
