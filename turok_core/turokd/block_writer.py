"""turokd's core, free of Twisted: hold decoded batches in open blocks, write each block once.

Slots are *set*, never added to, so a redelivered message writes the same values again and
leaves the stored data unchanged. ``BlockWriter.hold`` decodes a batch (``decode.py``), puts its
slots into the open blocks (``open_blocks.py``) and holds its SQS messages; ``close`` writes the
blocks that have closed, each in one merge, then recomputes the coarse blocks that close with
them (``rollup_writer.py``), and only then hands out the messages that may be deleted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from turok_core.model.config import TurokConfig
from turok_core.model.schemas import SchemaSet
from turok_core.storage.tables import BlockStore, WriteStats
from turok_core.turokd.decode import DecodedBatch, decode_batch
from turok_core.turokd.open_blocks import OpenBlocks
from turok_core.turokd.rollup_writer import PendingRollups, RollupPlan, rollup_blocks
from turok_core.wire.queues import ReceivedMessage


@dataclass
class CloseResult:
    """What one ``BlockWriter.close`` stored, and the SQS messages that may now be deleted."""
    deletable: list[str] = field(default_factory=list)
    blocks: int = 0  # base blocks written (merged) by this close
    slots: int = 0  # base slot values in them
    rollup_slots: int = 0  # coarse slot values written
    stats: WriteStats = field(default_factory=WriteStats)


class BlockWriter:
    """turokd's core: open blocks in memory, written once when they close, then rolled up.

    ``clock`` is the one time source (epoch seconds), injectable so a simulated day runs in
    minutes. ``hold`` may be called from several threads; ``close`` from one at a time.
    """

    def __init__(self, store: BlockStore, config: TurokConfig, schemas: Optional[SchemaSet] = None,
                 clock: Callable[[], float] = time.time,
                 owned_since: Optional[Callable[[str], Optional[float]]] = None) -> None:
        self.store = store
        self.clock = clock
        # since when this turokd has held a metric's partition lease (None: not held); blocks
        # starting after that time can only hold what this turokd wrote
        self.owned_since = owned_since
        self.open = OpenBlocks(config.block_slots, config.block_close_delay_seconds)
        self.rollups = PendingRollups(schemas, config.block_slots, config.block_close_delay_seconds) \
            if schemas is not None else None

    def hold(self, received: Sequence[ReceivedMessage]) -> DecodedBatch:
        """Hold a batch's slots in the open blocks; its messages wait for ``close``."""
        batch = decode_batch(received)
        batch.held = self.open.add(batch.slots, batch.accepted)
        return batch

    def close(self, now: Optional[float] = None) -> CloseResult:
        """Write every block closed by ``now`` (default: the clock), then the due rollups.

        Raises when a write fails; then the blocks stay open, the messages held and the rollups
        pending, and the next ``close`` tries again (a rewrite of what was written is a no-op).
        """
        now = self.clock() if now is None else now
        result = CloseResult()
        due = self.open.take_due(now)
        try:
            rows = due.rows()
            if rows:
                result.stats = self.store.write_blocks(rows)
                result.blocks = len(rows)
                result.slots = sum(len(values) for *_key, values in rows)
                if self.rollups is not None:
                    self.rollups.note_written((metric, step, start) for metric, step, start, _values in rows)
            self._roll_up(now, result)
        except BaseException:
            self.open.restore(due)
            raise
        self.open.written(due)
        result.deletable = due.receipt_handles
        return result

    def close_all(self) -> CloseResult:
        """Write every block, open or not, and every pending rollup (shutdown, tools)."""
        return self.close(math.inf)

    def _roll_up(self, now: float, result: CloseResult) -> None:
        if self.rollups is None:
            return
        while True:
            plans: list[RollupPlan] = self.rollups.take_due(now)
            if not plans:
                return
            try:
                written, slots = rollup_blocks(self.store, plans, result.stats)
            except BaseException:
                self.rollups.restore(plans, self.clock() if math.isinf(now) else now)
                raise
            result.rollup_slots += slots
            self.rollups.note_written(written)
