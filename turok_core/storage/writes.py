"""DynamoDB access for Turok's blocks: day tables, batched slot merges and batched range reads.

An item is one block (``blocks.py``): key ``metric`` (S, hash) and ``start_time`` (N, range, the
block's first second), and ``datapoints`` (B, msgpack; the design's JSON string is also read).
Writers *set* slot values, so writing the same slots again leaves the item unchanged: that is what
makes SQS redeliveries harmless. A block is merged (read, slots set) and put back only if it
still holds what was read (``conditional_writes``), so two turokd processes never lose each
other's slots. Reads are batched (BatchGetItem ≤ 100 keys); conditional puts are one PutItem per
block, sent in parallel (``put_threads``), and without them writes are batched (BatchWriteItem
≤ 25 items); unprocessed or throttled requests are retried with capped, jittered backoff, and a
block changed by another process between read and put is merged again.

Pure boto3 and blocking: services call these methods from their AWS thread pool. One store may be
used by many threads at once; merges of the same block by threads of one process are serialised.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Callable, Iterable, Iterator, Optional, Sequence

from botocore.exceptions import ClientError

from turok_core.storage.block_layout import block_span, decode_datapoints, encode_datapoints
from turok_core.model.config import TurokConfig
from turok_core.storage.table_names import table_name
from turok_core.model.timefmt import day_start
from turok_core.runtime.retry import Backoff, error_code

BATCH_GET_KEYS = 100
BATCH_WRITE_ITEMS = 25
BACKOFF = Backoff(base=0.05, cap=5.0)
TABLE_PRESENT_TTL = 300.0  # seconds a table seen to exist is trusted (a deletion is caught on read)
TABLE_ABSENT_TTL = 10.0  # seconds a missing table is believed missing (new day tables appear)
TABLE_WAIT_POLLS = 240  # DescribeTable polls while a table becomes ACTIVE
TABLE_WAIT_INTERVAL = 0.5
READABLE_STATUSES = ("ACTIVE", "UPDATING")
# the key attribute names as DynamoDB bills them, plus the datapoints attribute name
_NAME_BYTES = len("metric") + len("start_time") + len("datapoints")

_THROTTLED = ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded")

BlockKey = tuple[str, str, int]  # (table, metric, block start)


class BlockWriteError(RuntimeError):
    """Blocks DynamoDB kept refusing after every retry; nothing may be acknowledged."""


class BlockReadError(RuntimeError):
    """Keys DynamoDB kept leaving unprocessed after every retry."""


@dataclass
class WriteStats:
    items_written: int = 0
    items_unchanged: int = 0  # merges that changed nothing, so were not written (redeliveries)
    write_calls: int = 0
    write_units: int = 0  # approximate: each written item's size rounded up to 1 KB
    read_calls: int = 0
    tables_created: int = 0

    def add(self, other: "WriteStats") -> None:
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


class BlockStore:
    """Turok's blocks in DynamoDB day tables ``<prefix><joiner><DD-MM-YYYY><joiner><resolution>``."""

    def __init__(self, client, config: TurokConfig, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._config = config
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._known: set[str] = set()  # tables this store made sure of: writes skip DescribeTable
        self._checked: dict[str, tuple[bool, float]] = {}  # name → (exists, valid until)
        self._blocks = _BlockLocks()
        self._pool: Optional[ThreadPoolExecutor] = None  # conditional puts, made on first use

    @property
    def config(self) -> TurokConfig:
        return self._config

    # ----------------------------------------------------------------------------- tables

    def table_for(self, timestamp: int, step: int) -> str:
        """The day table holding ``timestamp`` at resolution ``step``."""
        return table_name(self._config.table_prefix, self._config.table_joiner, timestamp, step)

    def ensure_table(self, name: str) -> None:
        """Create table ``name`` unless it exists, and return once it is ACTIVE."""
        self._ensure(name)

    def _ensure(self, name: str) -> bool:
        """``ensure_table``; True when this call created the table."""
        with self._lock:
            if name in self._known:
                return False
        created = False
        for _ in range(TABLE_WAIT_POLLS):
            try:
                status = self._client.describe_table(TableName=name)["Table"]["TableStatus"]
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                status = None
            if status == "ACTIVE":
                break
            if status is None:
                try:
                    self._client.create_table(
                        TableName=name,
                        BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "metric", "KeyType": "HASH"},
                                   {"AttributeName": "start_time", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "metric", "AttributeType": "S"},
                                              {"AttributeName": "start_time", "AttributeType": "N"}],
                    )
                    created = True
                    continue  # moto creates tables ACTIVE at once: look again before sleeping
                except ClientError as exc:
                    if error_code(exc) != "ResourceInUseException":  # another writer made it
                        raise
            self._sleep(TABLE_WAIT_INTERVAL)
        else:
            raise BlockWriteError(f"table {name} did not become ACTIVE")
        with self._lock:
            self._known.add(name)
            self._checked[name] = (True, self._clock() + TABLE_PRESENT_TTL)
        return created

    def existing_tables(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` that exist and can be read (cached for a short while)."""
        now = self._clock()
        present: set[str] = set()
        unknown: list[str] = []
        with self._lock:
            for name in set(names):
                cached = self._checked.get(name)
                if cached is not None and cached[1] > now:
                    if cached[0]:
                        present.add(name)
                elif name in self._known:
                    present.add(name)
                else:
                    unknown.append(name)
        for name in unknown:
            try:
                exists = self._client.describe_table(TableName=name)["Table"]["TableStatus"] in READABLE_STATUSES
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                exists = False
            with self._lock:
                if len(self._checked) > 10000:  # drop expired entries of a long-running reader
                    self._checked = {k: v for k, v in self._checked.items() if v[1] > now}
                self._checked[name] = (exists, now + (TABLE_PRESENT_TTL if exists else TABLE_ABSENT_TTL))
            if exists:
                present.add(name)
        return present

    def _forget_tables(self, names: Iterable[str]) -> None:
        """Drop cached knowledge of tables after DynamoDB said one of them is missing."""
        with self._lock:
            for name in names:
                self._known.discard(name)
                self._checked.pop(name, None)

    # ----------------------------------------------------------------------------- writes

    def write_slots(self, slots: Iterable[tuple[str, int, int, float]], assume_new: bool = False) -> WriteStats:
        """Set slot values: ``(metric, step, slot_start, value)`` each, merged into their blocks.

        Every given slot is overwritten; the other slots of a block keep their stored values.
        ``assume_new``: as for ``write_blocks``. Raises ``BlockWriteError`` (or boto3's error)
        when not everything could be written.
        """
        spans: dict[int, int] = {}
        blocks: dict[tuple[str, int, int], dict[int, float]] = {}
        for metric, step, slot_start, value in slots:
            span = spans.get(step)
            if span is None:
                span = spans[step] = self.span(step)
            if slot_start % step:
                raise ValueError(f"slot {slot_start} of {metric!r} is not aligned to {step}s")
            start = slot_start - slot_start % span
            blocks.setdefault((metric, step, start), {})[(slot_start - start) // step] = value
        return self.write_blocks([(metric, step, start, values) for (metric, step, start), values in blocks.items()],
                                 assume_new)

    def write_blocks(self, blocks: Iterable[tuple[str, int, int, dict[int, float]]],
                     assume_new: bool = True) -> WriteStats:
        """Set the slots of whole blocks: ``(metric, step, block_start, {slot index: value})`` each.

        Like ``write_slots``, but for blocks gathered in memory. With ``assume_new`` (turokd
        writing a block that just closed, which is almost always new) each block is first put
        only if absent, which skips the read; a block that exists is then merged as usual.
        """
        spans: dict[int, int] = {}
        keyed: dict[BlockKey, tuple[int, dict[int, float]]] = {}
        for metric, step, start, values in blocks:
            span = spans.get(step)
            if span is None:
                span = spans[step] = self.span(step)
            if start % span:
                raise ValueError(f"block {start} of {metric!r} is not aligned to {span}s")
            keyed[(self.table_for(start, step), metric, start)] = (step, values)
        return self._write(keyed, spans, assume_new)

    def span(self, step: int) -> int:
        """Seconds per block at resolution ``step``."""
        return block_span(step, self._config.block_slots)

    def _write(self, blocks: dict[BlockKey, tuple[int, dict[int, float]]], spans: dict[int, int],
               assume_new: bool) -> WriteStats:
        stats = WriteStats()
        if not blocks:
            return stats
        names = {key[0] for key in blocks}
        for name in sorted(names):
            stats.tables_created += self._ensure(name)
        with self._blocks.hold(blocks):
            try:
                self._merge_and_write(blocks, spans, stats, assume_new)
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                # a table we knew was deleted (retention) while we held it: make it again, once
                self._forget_tables(names)
                for name in sorted(names):
                    stats.tables_created += self._ensure(name)
                self._merge_and_write(blocks, spans, stats, assume_new)
        return stats

    def _merge_and_write(self, blocks: dict[BlockKey, tuple[int, dict[int, float]]],
                         spans: dict[int, int], stats: WriteStats, assume_new: bool = False) -> None:
        remaining = dict(blocks)
        attempts = max(1, self._config.write_max_attempts)
        if assume_new and self._config.conditional_writes:
            # put-if-absent without reading first; blocks that exist fall through to the merge
            remaining = {key: remaining[key] for key in self._conditional_write(
                self._merge(remaining, spans, stats, stored={}), stats)}
            if not remaining:
                return
        for attempt in range(attempts):
            puts = self._merge(remaining, spans, stats)
            if not self._config.conditional_writes:
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
               stats: WriteStats, stored: Optional[dict[BlockKey, dict]] = None
               ) -> list[tuple[str, dict, Optional[dict], int]]:
        """Read the blocks (unless ``stored`` is given), set the new slots;
        ``(table, item, stored datapoints, units)`` to put."""
        if stored is None:
            keys = [(table, {"metric": {"S": metric}, "start_time": {"N": str(start)}})
                    for table, metric, start in blocks]
            stored = {}
            for table, item in self._batch_get(keys, consistent=True, stats=stats):
                stored[(table, item["metric"]["S"], int(item["start_time"]["N"]))] = item["datapoints"]
        puts: list[tuple[str, dict, Optional[dict], int]] = []
        for key, (step, new) in blocks.items():
            table, metric, start = key
            slot_count = spans[step] // step
            attribute = stored.get(key)
            values: list = []
            if attribute is not None:
                try:
                    values = decode_datapoints(attribute.get("B", attribute.get("S")))[:slot_count]
                except Exception:  # an unreadable block is rewritten from what we have
                    values = []
            if len(values) < slot_count:
                values.extend([None] * (slot_count - len(values)))
            for index, value in new.items():
                values[index] = value
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
            outcomes = list(self._put_pool().map(lambda put: self._put_if_unchanged(*put[:3]), puts))
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

    def _put_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, self._config.put_threads), thread_name_prefix="turok-put")
            return self._pool

    def _put_if_unchanged(self, table: str, item: dict, old: Optional[dict]) -> tuple[bool, int]:
        """One conditional PutItem (throttling retried): (False when the block changed meanwhile, calls)."""
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

    # ----------------------------------------------------------------------------- reads

    def _batch_get(self, keys: Sequence[tuple[str, dict]], consistent: bool,
                   stats: Optional[WriteStats] = None) -> list[tuple[str, dict]]:
        """BatchGetItem in calls of at most 100 keys, up to ``put_threads`` calls at once (a render
        of 1,000 series over a day is hundreds of calls); (table, item) for the keys that exist."""
        keys = list(keys)
        workers = min(max(1, self._config.put_threads), len(keys) // BATCH_GET_KEYS)
        if workers < 2:
            return self._batch_get_serial(keys, consistent, stats)
        share = -(-len(keys) // workers)
        parts = [keys[i:i + share] for i in range(0, len(keys), share)]
        part_stats = [WriteStats() for _ in parts]
        found: list[tuple[str, dict]] = []
        for items in self._put_pool().map(self._batch_get_serial, parts, [consistent] * len(parts), part_stats):
            found.extend(items)
        if stats is not None:
            for part in part_stats:
                stats.add(part)
        return found

    def _batch_get_serial(self, keys: Sequence[tuple[str, dict]], consistent: bool,
                          stats: Optional[WriteStats] = None) -> list[tuple[str, dict]]:
        found: list[tuple[str, dict]] = []
        pending = list(keys)
        stalls = 0
        attempts = max(1, self._config.write_max_attempts)
        while pending:
            chunk, pending = pending[:BATCH_GET_KEYS], pending[BATCH_GET_KEYS:]
            request: dict[str, dict] = {}
            for table, key in chunk:
                request.setdefault(table, {"Keys": [], "ConsistentRead": consistent})["Keys"].append(key)
            response = self._client.batch_get_item(RequestItems=request)
            if stats is not None:
                stats.read_calls += 1
            for table, items in response.get("Responses", {}).items():
                found.extend((table, item) for item in items)
            unprocessed = [(table, key) for table, spec in (response.get("UnprocessedKeys") or {}).items()
                           for key in spec.get("Keys", [])]
            if unprocessed:
                # a partial answer (16 MB cap) is progress; only an answer with nothing is a stall
                stalls = stalls + 1 if len(unprocessed) == len(chunk) else 0
                if stalls >= attempts:
                    raise BlockReadError(f"{len(unprocessed)} key(s) still unprocessed by BatchGetItem "
                                         f"after {attempts} attempts")
                if stalls:
                    self._backoff(stalls - 1)
                pending = unprocessed + pending
        return found

    def fetch_series(self, metrics: Sequence[str], step: int, start: int,
                     end: int) -> dict[str, list[Optional[float]]]:
        """Each metric's slot values for ``start, start+step, … < end``; None for gaps.

        ``start`` and ``end`` are multiples of ``step``. Missing items and tables read as gaps.
        """
        if start % step or end % step:
            raise ValueError(f"range [{start}, {end}) is not aligned to {step}s")
        count = max(0, (end - start) // step)
        result: dict[str, list[Optional[float]]] = {metric: [None] * count for metric in metrics}
        if not count or not result:
            return result
        span = block_span(step, self._config.block_slots)
        block_tables: dict[int, str] = {}
        day_tables: dict[int, str] = {}
        for block in range(start - start % span, end, span):
            day = day_start(block)
            table = day_tables.get(day)
            if table is None:
                table = day_tables[day] = self.table_for(day, step)
            block_tables[block] = table
        for retry in (True, False):
            present = self.existing_tables(day_tables.values())
            keys = [(table, {"metric": {"S": metric}, "start_time": {"N": str(block)}})
                    for metric in result for block, table in block_tables.items() if table in present]
            try:
                items = self._batch_get(keys, consistent=False)
                break
            except ClientError as exc:
                if not retry or error_code(exc) != "ResourceNotFoundException":
                    raise
                self._forget_tables(present)  # a table went away since we looked: look again
        for _table, item in items:
            row = result.get(item["metric"]["S"])
            attribute = item.get("datapoints", {})
            if row is None:
                continue
            values = decode_datapoints(attribute.get("B", attribute.get("S")))
            offset = (int(item["start_time"]["N"]) - start) // step
            low, high = max(0, -offset), min(len(values), count - offset)
            if low < high:
                row[offset + low:offset + high] = values[low:high]
        return result

    def fetch_slots(self, step: int, ranges: Iterable[tuple[str, int, int]],
                    consistent: bool = False) -> dict[str, dict[int, float]]:
        """The stored slots of several ``(metric, start, end)`` ranges at ``step``, in one batched read.

        Returns ``{metric: {slot_start: value}}`` holding every known slot of the blocks that
        overlap the ranges (possibly more than asked; gaps are absent). ``consistent`` reads
        what this process has just written (rollups read the finer slots they have just set).
        """
        span = block_span(step, self._config.block_slots)
        wanted: dict[tuple[str, int], str] = {}
        for metric, start, end in ranges:
            for block in range(start - start % span, end, span):
                if (metric, block) not in wanted:
                    wanted[(metric, block)] = self.table_for(block, step)
        result: dict[str, dict[int, float]] = {}
        if not wanted:
            return result
        for retry in (True, False):
            present = self.existing_tables(set(wanted.values()))
            keys = [(table, {"metric": {"S": metric}, "start_time": {"N": str(block)}})
                    for (metric, block), table in wanted.items() if table in present]
            try:
                items = self._batch_get(keys, consistent=consistent)
                break
            except ClientError as exc:
                if not retry or error_code(exc) != "ResourceNotFoundException":
                    raise
                self._forget_tables(present)
        for _table, item in items:
            attribute = item.get("datapoints", {})
            start = int(item["start_time"]["N"])
            row = result.setdefault(item["metric"]["S"], {})
            for index, value in enumerate(decode_datapoints(attribute.get("B", attribute.get("S")))):
                if value is not None:
                    row[start + index * step] = value
        return result

    def _backoff(self, attempt: int) -> None:
        self._sleep(BACKOFF.delay(attempt))
