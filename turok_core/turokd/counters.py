"""turokd's counters: what it logs every minute and at a stop, and reports as self-metrics."""
from __future__ import annotations

from dataclasses import dataclass

from turok_core.turokd.block_writer import CloseResult
from turok_core.turokd.decode import DecodedBatch


@dataclass
class TurokdCounters:
    messages_received: int = 0  # SQS messages
    bodies_rejected: int = 0  # undecodable bodies, left for the dead-letter queue
    turok_messages: int = 0  # Turok messages in the accepted bodies
    slots_received: int = 0  # slot values put into open blocks
    slots_moved: int = 0  # old slot values moved to the archive covering their age (backfill)
    blocks_written: int = 0  # base blocks written (each once when it closes, unless data came late)
    slots_written: int = 0
    rollup_slots_written: int = 0  # coarse slots recomputed into the coarser archives
    items_written: int = 0
    items_unchanged: int = 0  # blocks a redelivery left as they were (not rewritten)
    write_units: int = 0
    tables_created: int = 0
    messages_deleted: int = 0
    visibility_extensions: int = 0  # held messages given a longer visibility timeout
    receive_pauses: int = 0  # poll rounds skipped because max_held_messages were held
    announcements_sent: int = 0  # index-queue bodies
    names_announced: int = 0
    cache_queries: int = 0  # finder queries for held slots
    cache_queries_refused: int = 0  # malformed ones
    leases_taken: int = 0  # partitions this turokd started holding
    leases_lost: int = 0  # partitions dropped unwritten: lease lost or not provably held
    leases_released: int = 0  # partitions given back after their blocks were written
    errors: int = 0  # failed rounds or ticks (nothing acknowledged; SQS redelivers)

    def count_batch(self, batch: DecodedBatch) -> None:
        """A batch held in the open blocks."""
        self.bodies_rejected += len(batch.rejected)
        self.turok_messages += batch.messages
        self.slots_received += batch.slot_count
        self.slots_moved += batch.moved

    def count_close(self, result: CloseResult) -> None:
        """What one ``BlockWriter.close`` wrote."""
        stats = result.stats
        self.blocks_written += result.blocks
        self.slots_written += result.slots
        self.rollup_slots_written += result.rollup_slots
        self.items_written += stats.items_written
        self.items_unchanged += stats.items_unchanged
        self.write_units += stats.write_units
        self.tables_created += stats.tables_created

    def count_cache_query(self, answered: bool) -> None:
        """A finder's query for held slots, answered or refused as malformed."""
        if answered:
            self.cache_queries += 1
        else:
            self.cache_queries_refused += 1
