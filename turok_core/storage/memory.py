"""``MemoryBlockStore``: Turok's blocks in memory, behind the same interface as ``BlockStore``.

For tests, benchmarks and tools that need a block store without DynamoDB. It keeps what the
DynamoDB store guarantees, checked by one contract suite (tests/storage/test_block_store_contract.py):
day tables named as in DynamoDB, created on first write; blocks starting on the ``block_span``
grid, as long as written (up to their day's end, never cut by a merge), stored as the same v2
blob; slot values *set*, never added, so a redelivered write changes nothing (and counts as
``items_unchanged``); ``fetch_series`` gaps as None; ``fetch_slots`` every known slot of the
blocks overlapping the ranges; the same ``ValueError`` for unaligned slots, blocks and ranges
(and slots past a block's day); where blocks overlap (legacy grid-long blocks beside a longer one) the earlier-starting
block's values win. ``WriteStats`` counts what DynamoDB would have been asked (calls, write units).
Thread-safe; no I/O, so nothing is ever throttled or unprocessed.
"""
from __future__ import annotations

import math
import threading
from typing import Iterable, Optional, Sequence

from turok_core.model.config import TurokConfig
from turok_core.storage.block_layout import (
    archive_span,
    block_span,
    coarse_block_span,
    decode_datapoints,
    encode_datapoints,
    slots_by_block,
)
from turok_core.storage.reads import BATCH_GET_KEYS
from turok_core.storage.table_names import check_table_affixes, table_name
from turok_core.storage.writes import (
    BATCH_WRITE_ITEMS,
    BlockValues,
    MergedBlocks,
    WriteStats,
    block_row,
    check_block,
    item_size,
    merged_length,
)


class MemoryBlockStore:
    """Blocks in dicts: ``{table: {(metric, block start): datapoints blob}}``."""

    def __init__(self, config: TurokConfig) -> None:
        check_table_affixes(config.table_prefix, config.table_joiner)  # names as DynamoDB takes them
        self._config = config
        self._lock = threading.RLock()
        self._tables: dict[str, dict[tuple[str, int], bytes]] = {}

    @property
    def config(self) -> TurokConfig:
        return self._config

    def table_for(self, timestamp: int, step: int) -> str:
        """The day table holding ``timestamp`` at resolution ``step``."""
        return table_name(self._config.table_prefix, self._config.table_joiner, timestamp, step)

    def ensure_table(self, name: str) -> None:
        """Create table ``name`` unless it exists."""
        self._ensure(name)

    def _ensure(self, name: str) -> bool:
        with self._lock:
            if name in self._tables:
                return False
            self._tables[name] = {}
            return True

    def existing_tables(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` that exist."""
        with self._lock:
            return {name for name in names if name in self._tables}

    def table_names(self) -> list[str]:
        """Every table made so far."""
        with self._lock:
            return sorted(self._tables)

    def span(self, step: int) -> int:
        """Seconds per block at resolution ``step``: the key grid, and the base archive's blocks."""
        return block_span(step, self._config.block_slots)

    def archive_span(self, step: int, level: int) -> int:
        """Seconds per block of a metric's archive ``level`` at ``step`` (``block_layout.archive_span``)."""
        return archive_span(step, level, self._config.block_slots, self._config.coarse_block_slots)

    def _longest(self, step: int) -> int:
        """The longest block a read at ``step`` may meet (``coarse_block_span``)."""
        return coarse_block_span(step, self._config.block_slots, self._config.coarse_block_slots)

    def block_starts(self, table: str) -> Optional[frozenset[int]]:
        """The starts of the blocks stored in ``table`` (``BlockStore.block_starts``: what its
        record names; in memory every write lands, so the stored blocks are the record)."""
        with self._lock:
            return frozenset(start for _metric, start in self._tables.get(table, {}))

    def write_slots(self, slots: Iterable[tuple[str, int, int, float]], assume_new: bool = False,
                    exclusive: bool = False, fill_gaps: bool = False) -> WriteStats:
        """Set slot values: ``(metric, step, slot_start, value)`` each, merged into their blocks."""
        return self.write_blocks(slots_by_block(slots, self.span), assume_new, exclusive, fill_gaps)

    def write_blocks(self, blocks: Iterable[tuple[str, int, int, dict[int, float]]],
                     assume_new: bool = True, exclusive: bool = False, fill_gaps: bool = False,
                     merged: Optional[MergedBlocks] = None) -> WriteStats:
        """Set the slots of whole blocks: ``(metric, step, block_start, {slot index: value})`` each
        (with ``fill_gaps`` only slots without a stored value; ``merged`` as ``BlockStore``'s)."""
        keyed: dict[tuple[str, str, int], tuple[int, dict[int, float]]] = {}
        for metric, step, start, values in blocks:
            check_block(metric, step, start, self.span(step), values)
            keyed[(self.table_for(start, step), metric, start)] = (step, values)
        stats = WriteStats()
        if not keyed:
            return stats
        conditional = self._config.conditional_writes and not exclusive  # as BlockMerger counts calls
        with self._lock:
            for name in sorted({table for table, _metric, _start in keyed}):
                stats.tables_created += self._ensure(name)
            remaining = keyed
            if assume_new and conditional:
                # as DynamoDB's put-if-absent: one call per block, blocks that exist are merged below
                stats.write_calls += len(keyed)
                remaining = {}
                for key, (step, values) in keyed.items():
                    if (key[1], key[2]) in self._tables[key[0]]:
                        remaining[key] = (step, values)
                    else:
                        self._put(key, self._merged(None, step, values), stats)
            if not remaining:
                return stats
            stats.read_calls += math.ceil(len(remaining) / BATCH_GET_KEYS)
            puts = 0
            for key, (step, values) in remaining.items():
                table, metric, start = key
                stored = self._tables[table].get((metric, start))
                blob = self._merged(stored, step, values, fill_gaps)
                if merged is not None:  # every slot of the block, as BlockMerger gives them
                    stored_values = decode_datapoints(blob)
                    slot_count = merged_length(len(decode_datapoints(stored)) if stored is not None else 0,
                                               self.span(step) // step, values)
                    merged[(metric, step, start)] = stored_values + [None] * (slot_count - len(stored_values))
                if blob == stored:
                    stats.items_unchanged += 1  # a redelivery: same values, no write unit spent
                    continue
                self._put(key, blob, stats)
                puts += 1
            stats.write_calls += puts if conditional else math.ceil(puts / BATCH_WRITE_ITEMS)
        return stats

    def put_blocks(self, blocks: Iterable[tuple[str, int, int, BlockValues]]) -> WriteStats:
        """Write whole new blocks, replacing what is stored, without a read (BatchWriteItem's count);
        values as ``BlockStore.put_blocks`` takes them."""
        stats = WriteStats()
        puts: dict[tuple[str, str, int], bytes] = {}
        for metric, step, start, values in blocks:
            span = self.span(step)
            check_block(metric, step, start, span, values)
            puts[(self.table_for(start, step), metric, start)] = encode_datapoints(block_row(values, span // step))
        with self._lock:
            for name in sorted({table for table, _metric, _start in puts}):
                stats.tables_created += self._ensure(name)
            for key, blob in puts.items():
                self._put(key, blob, stats)
        stats.write_calls += math.ceil(len(puts) / BATCH_WRITE_ITEMS)
        return stats

    def _merged(self, stored: Optional[bytes], step: int, new: dict[int, float], fill_gaps: bool = False) -> bytes:
        values: list = decode_datapoints(stored) if stored is not None else []
        slot_count = merged_length(len(values), self.span(step) // step, new)  # never cut to the grid
        values.extend([None] * (slot_count - len(values)))
        for index, value in new.items():
            if not fill_gaps or values[index] is None:
                values[index] = value
        return encode_datapoints(values)

    def _put(self, key: tuple[str, str, int], blob: bytes, stats: WriteStats) -> None:
        table, metric, start = key
        self._tables[table][(metric, start)] = blob
        stats.items_written += 1
        stats.write_units += max(1, math.ceil(item_size(metric, start, blob) / 1024))

    def _blocks(self, step: int, pairs: Iterable[tuple[str, int]]) -> list[tuple[str, int, list]]:
        """``(metric, block start, slot values)`` of the stored blocks among ``(metric, block start)``,
        latest start first: placed in this order, an earlier-starting (longer) block wins where
        blocks overlap (``reads.py``)."""
        found = []
        with self._lock:
            for metric, block in pairs:
                blob = self._tables.get(self.table_for(block, step), {}).get((metric, block))
                if blob is not None:
                    found.append((metric, block, decode_datapoints(blob)))
        found.sort(key=lambda entry: -entry[1])
        return found

    def fetch_series(self, metrics: Sequence[str], step: int, start: int,
                     end: int) -> dict[str, list[Optional[float]]]:
        """Each metric's slot values for ``start, start+step, … < end``; None for gaps."""
        if start % step or end % step:
            raise ValueError(f"range [{start}, {end}) is not aligned to {step}s")
        count = max(0, (end - start) // step)
        result: dict[str, list[Optional[float]]] = {metric: [None] * count for metric in metrics}
        if not count or not result:
            return result
        span, longest = self.span(step), self._longest(step)
        blocks = range(start - start % longest, end, span)
        for metric, block, values in self._blocks(step, [(m, b) for m in result for b in blocks]):
            row = result[metric]
            offset = (block - start) // step
            # gaps leave what a later-starting block placed before (legacy overlap, reads.py)
            for index in range(max(0, -offset), min(len(values), len(row) - offset)):
                if values[index] is not None:
                    row[offset + index] = values[index]
        return result

    def fetch_slots(self, step: int, ranges: Iterable[tuple[str, int, int]],
                    consistent: bool = False) -> dict[str, dict[int, float]]:
        """``{metric: {slot_start: value}}``: every known slot of the blocks overlapping the
        ``(metric, start, end)`` ranges (always consistent: memory has no stale replicas)."""
        span, longest = self.span(step), self._longest(step)
        wanted: dict[tuple[str, int], None] = {}
        for metric, start, end in ranges:
            for block in range(start - start % longest, end, span):
                wanted[(metric, block)] = None
        result: dict[str, dict[int, float]] = {}
        for metric, block, values in self._blocks(step, wanted):
            row = result.setdefault(metric, {})
            for index, value in enumerate(values):
                if value is not None:
                    row[block + index * step] = value
        return result
