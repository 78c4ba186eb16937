"""turokd's whole write path for one batch at once, for tests: hold, then close everything."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from turok_core.model.config import TurokConfig
from turok_core.model.schemas import SchemaSet
from turok_core.storage.tables import BlockStore, WriteStats
from turok_core.turokd.block_writer import BlockWriter
from turok_core.turokd.decode import Rejected
from turok_core.wire.queues import ReceivedMessage


@dataclass
class BatchResult:
    deletable: list[str] = field(default_factory=list)  # receipt handles whose data is stored
    rejected: list[Rejected] = field(default_factory=list)  # bodies left for the dead-letter queue
    metrics: set[str] = field(default_factory=set)  # every metric name the stored messages carry
    messages: int = 0  # Turok messages decoded from the accepted bodies
    slots: int = 0  # slot values written
    rollup_slots: int = 0  # coarse slot values written by the rollups
    stats: WriteStats = field(default_factory=WriteStats)


def process_batch(received: Sequence[ReceivedMessage], store: BlockStore,
                  schemas: Optional[SchemaSet] = None, config: Optional[TurokConfig] = None) -> BatchResult:
    """Store what a batch of SQS messages carries at once; say which messages may be deleted.

    ``BlockWriter`` with every block closing immediately: the base slots are merged into their
    blocks, and with ``schemas`` rolled up through every coarser archive. A body that cannot be
    decoded is rejected (with its reason) and must not be deleted, so the queue's redrive policy
    moves it to the dead-letter queue. Raises when the write fails: then nothing may be deleted.
    """
    writer = BlockWriter(store, config if config is not None else store.config, schemas)
    batch = writer.hold(received)
    closed = writer.close_all()
    return BatchResult(deletable=batch.duplicates + closed.deletable, rejected=batch.rejected,
                       metrics=batch.metrics, messages=batch.messages, slots=batch.slot_count,
                       rollup_slots=closed.rollup_slots, stats=closed.stats)
