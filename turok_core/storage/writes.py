"""Batched slot merges into Turok's blocks: conditional puts, batch writes, block locks, write stats.

An item is one block (``block_layout.py``): key ``metric`` (S, hash) and ``start_time`` (N, range,
the block's first second, on the ``block_span`` grid; a block may hold slots up to its day's end,
as a coarse archive's longer blocks do, and a merge keeps the longer of the stored and new
lengths), and ``datapoints`` (B, block format v2; v1 msgpack and the design's JSON string
are also read).
Writers *set* slot values, so writing the same slots again leaves the item unchanged: that is what
makes SQS redeliveries harmless. A block is merged (read, slots set) and put back only if it
still holds what was read (``conditional_writes``), so two turokd processes never lose each
other's slots. Conditional puts are one PutItem per block, sent in parallel (``put_threads``),
and without them writes are batched (BatchWriteItem ≤ 25 items); unprocessed or throttled
requests are retried with capped, jittered backoff, and a block changed by another process
between read and put is merged again. A writer that alone writes its blocks (turokd holding the
partition's lease) merges them ``exclusive``: read in batches, put back with BatchWriteItem, no
condition; blocks it alone writes and has not written before are put whole, without a read
(``put_blocks``). BatchWriteItem bodies are written without botocore's serializer
(``lean_writes.py``). Before a block is first written its start goes into its table's record of
block starts (``block_starts.py``). An import of history merges with ``fill_gaps``: it sets only slots that hold no
value yet, so what turokd wrote (live data, newer) wins.

One merger may be used by many threads at once; merges of the same block by threads of one
process are serialised. Pure boto3 and blocking, like the rest of ``turok_core.storage``.
"""
from __future__ import annotations

import math
import threading
from collections import abc
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

from botocore.exceptions import ClientError

from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code
from turok_core.storage.block_layout import block_span, day_slots, decode_datapoints, encode_datapoints, slots_by_block
from turok_core.storage.lean_writes import lean_batch_write
from turok_core.storage.reads import BlockReader

if TYPE_CHECKING:
    from turok_core.storage.tables import DayTables

BATCH_WRITE_ITEMS = 25
# the key attribute names as DynamoDB bills them, plus the datapoints attribute name
_NAME_BYTES = len("metric") + len("start_time") + len("datapoints")

_THROTTLED = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded")

BlockKey = tuple[str, str, int]  # (table, metric, block start)
# (metric, step, block start) → the block's slot values after a merge, None for gaps
MergedBlocks = dict[tuple[str, int, int], list]


# a block's values as writers give them: {slot index: value}, or every slot in order (gaps NaN or None)
BlockValues = Union[Mapping[int, float], Sequence[Optional[float]]]


def block_row(values: BlockValues, slots: int) -> Sequence[Optional[float]]:
    """A block's slots in order from either form of ``BlockValues``: a sequence as it is (its
    length checked by ``check_block``), a mapping as a row of at least ``slots``."""
    if not isinstance(values, abc.Mapping):  # collections' ABC: typing's alias checks ten times slower
        return values
    row: list[Optional[float]] = [None] * merged_length(0, slots, values)
    for index, value in values.items():
        row[index] = value
    return row


def check_block(metric: str, step: int, start: int, span: int, values: BlockValues) -> None:
    """Refuse a block whose start is off the key grid (``span``) or whose slots pass its day's end."""
    if start % span:
        raise ValueError(f"block {start} of {metric!r} is not aligned to {span}s")
    limit = day_slots(start, step)
    if isinstance(values, abc.Mapping):
        if values and (max(values) >= limit or min(values) < 0):
            raise ValueError(f"block {start} of {metric!r} at {step}s: slot index outside 0..{limit - 1}")
    elif len(values) > limit:
        raise ValueError(f"{len(values)} slot values for block {start} of {metric!r}: its day has {limit} left")


def merged_length(stored: int, grid_slots: int, new: Mapping[int, float]) -> int:
    """Slots of a block after a merge: the longer of what is stored and what is written (a block
    longer than the grid, ``block_layout.coarse_block_span``, is never cut), at least the grid's."""
    return max(stored, grid_slots, max(new) + 1 if new else 0)


class BlockWriteError(RuntimeError):
    """Blocks DynamoDB kept refusing after every retry; nothing may be acknowledged."""


@dataclass
class WriteStats:
    items_written: int = 0
    items_unchanged: int = 0  # merges that changed nothing, so were not written (redeliveries)
    write_calls: int = 0
    write_units: int = 0  # approximate: each written item's size rounded up to 1 KB
    read_calls: int = 0
    tables_created: int = 0

    def add(self, other: WriteStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def item_size(metric: str, start_time: int, blob: bytes) -> int:
    """DynamoDB's size of a block item: attribute names plus values (numbers ~1 byte per 2 digits)."""
    digits = len(str(start_time).strip("0")) or 1
    return _NAME_BYTES + len(metric.encode("utf-8")) + (digits + 1) // 2 + 1 + len(blob)


class _BlockLocks:
    """Serialises read-merge-write of the same blocks by the threads of one process.

    A writer takes all its block keys at once or waits, so two writers never deadlock, and
    writers with disjoint blocks run in parallel.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy: set[BlockKey] = set()

    @contextmanager
    def hold(self, keys: Iterable[BlockKey]) -> Iterator[None]:
        keys = set(keys)
        with self._changed:
            while not self._busy.isdisjoint(keys):
                self._changed.wait()
            self._busy |= keys
        try:
            yield
        finally:
            with self._changed:
                self._busy -= keys
                self._changed.notify_all()


class BlockMerger:
    """Sets slots into the blocks of the day tables; ``BlockStore`` hands its writes here."""

    def __init__(self, client: AwsClient, config: TurokConfig, tables: DayTables, reader: BlockReader,
                 pool: Callable[[], ThreadPoolExecutor], backoff: Callable[[int], None]) -> None:
        self._client = client
        self._config = config
        self._tables = tables
        self._reader = reader
        self._pool = pool
        self._backoff = backoff
        self._blocks = _BlockLocks()
        if hasattr(client, "meta"):  # a boto3 client (or a test's wrapper of one)
            lean_batch_write(client)

    def write_slots(self, slots: Iterable[tuple[str, int, int, float]], assume_new: bool = False,
                    exclusive: bool = False, fill_gaps: bool = False) -> WriteStats:
        """Set slot values: ``(metric, step, slot_start, value)`` each, merged into their blocks.

        Every given slot is overwritten; the other slots of a block keep their stored values.
        ``assume_new``, ``exclusive``, ``fill_gaps``: as for ``write_blocks``. Raises
        ``BlockWriteError`` (or boto3's error) when not everything could be written.
        """
        return self.write_blocks(slots_by_block(slots, lambda step: block_span(step, self._config.block_slots)),
                                 assume_new, exclusive, fill_gaps)

    def write_blocks(self, blocks: Iterable[tuple[str, int, int, dict[int, float]]],
                     assume_new: bool = True, exclusive: bool = False, fill_gaps: bool = False,
                     merged: Optional[MergedBlocks] = None) -> WriteStats:
        """Set the slots of whole blocks: ``(metric, step, block_start, {slot index: value})`` each.

        Like ``write_slots``, but for blocks gathered in memory. With ``assume_new`` (turokd
        writing a block that just closed, which is almost always new) each block is first put
        only if absent, which skips the read; a block that exists is then merged as usual.
        ``exclusive``: no other process writes these blocks (the caller holds their partition's
        lease), so they are read in batches and put back with BatchWriteItem, without conditions.
        ``fill_gaps``: only slots that hold no value yet are set; stored values win (the import of
        history under blocks turokd already wrote).
        ``merged``, when given, receives every merged block's slot values as stored now (then a
        sole writer knows its blocks whole without reading them again); blocks put if absent
        without a read are not in it.
        """
        spans: dict[int, int] = {}
        keyed: dict[BlockKey, tuple[int, dict[int, float]]] = {}
        for metric, step, start, values in blocks:
            span = spans.get(step)
            if span is None:
                span = spans[step] = block_span(step, self._config.block_slots)
            check_block(metric, step, start, span, values)
            keyed[(self._tables.table_for(start, step), metric, start)] = (step, values)
        return self._write(keyed, spans, assume_new, exclusive, fill_gaps, merged)

    def put_blocks(self, blocks: Iterable[tuple[str, int, int, BlockValues]]) -> WriteStats:
        """Write whole new blocks, ``(metric, step, block_start, {slot index: value})`` each (or
        the block's every slot in a sequence, gaps NaN or None: ``block_row``), with
        BatchWriteItem: no read, no condition, each item replaced by what is given.

        Only for blocks their writer alone writes and has not written before (turokd holding the
        lease of the metric's partition since before the block began): anything else must be
        merged (``write_blocks``). Unprocessed items are retried with backoff; raises
        ``BlockWriteError`` when some stay unprocessed.
        """
        spans: dict[int, int] = {}
        tables: dict[tuple[int, int], str] = {}  # (step, start) → day table: one name per block id
        puts: dict[BlockKey, tuple[dict, int]] = {}
        for metric, step, start, values in blocks:
            table = tables.get((step, start))
            if table is None:
                span = spans.get(step)
                if span is None:
                    span = spans[step] = block_span(step, self._config.block_slots)
                table = tables[(step, start)] = self._tables.table_for(start, step)
            check_block(metric, step, start, spans[step], values)
            blob = encode_datapoints(block_row(values, spans[step] // step))
            item = {"metric": {"S": metric}, "start_time": {"N": str(start)}, "datapoints": {"B": blob}}
            # one key once per call: BatchWriteItem refuses a request naming an item twice
            puts[(table, metric, start)] = (item, max(1, math.ceil(item_size(metric, start, blob) / 1024)))
        stats = WriteStats()
        if not puts:
            return stats
        self._prepare(puts, stats)
        requests = [(key[0], item) for key, (item, _units) in puts.items()]
        try:
            self._batch_write(requests, stats)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            self._tables.forget({key[0] for key in puts})  # a table deleted (retention) while we held it: once more
            self._prepare(puts, stats)
            self._batch_write(requests, stats)
        stats.items_written += len(puts)
        stats.write_units += sum(units for _item, units in puts.values())
        return stats

    def _write(self, blocks: dict[BlockKey, tuple[int, dict[int, float]]], spans: dict[int, int],
               assume_new: bool, exclusive: bool, fill_gaps: bool = False,
               merged: Optional[MergedBlocks] = None) -> WriteStats:
        stats = WriteStats()
        if not blocks:
            return stats
        self._prepare(blocks, stats)
        with self._blocks.hold(blocks):
            try:
                self._merge_and_write(blocks, spans, stats, assume_new, exclusive, fill_gaps, merged)
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                # a table we knew was deleted (retention) while we held it: make it again, once
                self._tables.forget({key[0] for key in blocks})
                self._prepare(blocks, stats)
                self._merge_and_write(blocks, spans, stats, assume_new, exclusive, fill_gaps, merged)
        return stats

    def _prepare(self, keys: Iterable[BlockKey], stats: WriteStats) -> None:
        """Make sure the tables of ``keys`` exist, and record their blocks' starts there before
        any is written (``block_starts.py``)."""
        starts: dict[str, set[int]] = {}
        for table, _metric, start in keys:
            starts.setdefault(table, set()).add(start)
        for name in sorted(starts):
            stats.tables_created += self._tables.ensure(name)
            self._tables.starts.note(name, starts[name])

    def _merge_and_write(self, blocks: dict[BlockKey, tuple[int, dict[int, float]]],
                         spans: dict[int, int], stats: WriteStats, assume_new: bool = False,
                         exclusive: bool = False, fill_gaps: bool = False,
                         merged: Optional[MergedBlocks] = None) -> None:
        remaining = dict(blocks)
        attempts = max(1, self._config.write_max_attempts)
        conditional = self._config.conditional_writes and not exclusive
        if assume_new and conditional:
            # put-if-absent without reading first; blocks that exist fall through to the merge
            remaining = {key: remaining[key] for key in self._conditional_write(
                self._merge(remaining, spans, stats, stored={}, fill_gaps=fill_gaps), stats)}
            if not remaining:
                return
        for attempt in range(attempts):
            puts = self._merge(remaining, spans, stats, fill_gaps=fill_gaps, merged=merged)
            if not conditional:
                self._batch_write([(table, item) for table, item, _old, _units in puts], stats)
                stats.items_written += len(puts)
                stats.write_units += sum(units for *_rest, units in puts)
                return
            conflicts = self._conditional_write(puts, stats)
            if not conflicts:
                return
            # another process changed these blocks since we read them: merge into theirs again
            remaining = {key: remaining[key] for key in conflicts}
            self._backoff(attempt)
        raise BlockWriteError(f"{len(remaining)} block(s) kept changing under us for {attempts} attempts")

    def _merge(self, blocks: dict[BlockKey, tuple[int, dict[int, float]]], spans: dict[int, int],
               stats: WriteStats, stored: Optional[dict[BlockKey, dict]] = None, fill_gaps: bool = False,
               merged: Optional[MergedBlocks] = None) -> list[tuple[str, dict, Optional[dict], int]]:
        """Read the blocks (unless ``stored`` is given), set the new slots (with ``fill_gaps`` only
        those without a stored value); ``(table, item, stored datapoints, units)`` to put."""
        if stored is None:
            keys = [(table, {"metric": {"S": metric}, "start_time": {"N": str(start)}})
                    for table, metric, start in blocks]
            stored = {}
            for table, item in self._reader.batch_get(keys, consistent=True, stats=stats):
                stored[(table, item["metric"]["S"], int(item["start_time"]["N"]))] = item["datapoints"]
        puts: list[tuple[str, dict, Optional[dict], int]] = []
        for key, (step, new) in blocks.items():
            table, metric, start = key
            attribute = stored.get(key)
            values: list = []
            if attribute is not None:
                try:
                    values = decode_datapoints(attribute.get("B", attribute.get("S")))
                except Exception:  # an unreadable block is rewritten from what we have
                    values = []
            # never cut to the grid: a stored block may be longer (coarse_block_span), and is kept whole
            slot_count = merged_length(len(values), spans[step] // step, new)
            if len(values) < slot_count:
                values.extend([None] * (slot_count - len(values)))
            for index, value in new.items():
                if not fill_gaps or values[index] is None:
                    values[index] = value
            if merged is not None:
                merged[(metric, step, start)] = values
            blob = encode_datapoints(values)
            if attribute is not None and "B" in attribute and bytes(attribute["B"]) == blob:
                stats.items_unchanged += 1  # a redelivery: same values, no write unit spent
                continue
            units = max(1, math.ceil(item_size(metric, start, blob) / 1024))
            puts.append((table, {"metric": {"S": metric}, "start_time": {"N": str(start)},
                                 "datapoints": {"B": blob}}, attribute, units))
        return puts

    def _conditional_write(self, puts: Sequence[tuple[str, dict, Optional[dict], int]],
                           stats: WriteStats) -> list[BlockKey]:
        """PutItem each block only if it still holds what we merged into; the keys that did not.

        Several turokd processes may merge into the same block: the condition turns a lost
        update into a retry (on-demand tables bill per write unit, not per request, so one
        PutItem per block costs what a BatchWriteItem entry costs).
        """
        conflicts: list[BlockKey] = []
        if len(puts) > 1:  # one request per block: send them side by side, not one after another
            outcomes = list(self._pool().map(lambda put: self._put_if_unchanged(*put[:3]), puts))
        else:
            outcomes = [self._put_if_unchanged(*put[:3]) for put in puts]
        for (table, item, _old, units), (written, calls) in zip(puts, outcomes):
            stats.write_calls += calls
            if written:
                stats.items_written += 1
                stats.write_units += units
            else:
                conflicts.append((table, item["metric"]["S"], int(item["start_time"]["N"])))
        return conflicts

    def _put_if_unchanged(self, table: str, item: dict, old: Optional[dict]) -> tuple[bool, int]:
        """One conditional PutItem (throttling retried): (False when the block changed meanwhile, calls)."""
        condition: dict[str, object]
        if old is None:
            condition = {"ConditionExpression": "attribute_not_exists(metric)"}
        else:
            condition = {"ConditionExpression": "datapoints = :old", "ExpressionAttributeValues": {":old": old}}
        attempts = max(1, self._config.write_max_attempts)
        for attempt in range(attempts):
            try:
                self._client.put_item(TableName=table, Item=item, **condition)
                return True, attempt + 1
            except ClientError as exc:
                code = error_code(exc)
                if code == "ConditionalCheckFailedException":
                    return False, attempt + 1
                if code not in _THROTTLED or attempt + 1 >= attempts:
                    raise
                self._backoff(attempt)
        return False, attempts  # pragma: no cover - the loop returns or raises

    def _batch_write(self, puts: Sequence[tuple[str, dict]], stats: WriteStats) -> None:
        """BatchWriteItem in calls of at most 25 items, retrying unprocessed items."""
        attempts = max(1, self._config.write_max_attempts)
        for offset in range(0, len(puts), BATCH_WRITE_ITEMS):
            request: dict[str, list] = {}
            for table, item in puts[offset:offset + BATCH_WRITE_ITEMS]:
                request.setdefault(table, []).append({"PutRequest": {"Item": item}})
            for attempt in range(attempts):
                response = self._client.batch_write_item(RequestItems=request)
                stats.write_calls += 1
                request = {t: r for t, r in (response.get("UnprocessedItems") or {}).items() if r}
                if not request:
                    break
                if attempt + 1 < attempts:
                    self._backoff(attempt)
            else:
                left = sum(len(r) for r in request.values())
                raise BlockWriteError(f"{left} block(s) still unprocessed by BatchWriteItem after "
                                      f"{attempts} attempts (tables {sorted(request)})")
