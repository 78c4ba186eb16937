"""Batched reads of Turok's blocks: BatchGetItem, and series and slots read back from blocks.

Keys are asked in calls of at most 100 (``BATCH_GET_KEYS``), several calls at once for a wide
read (``put_threads``); keys DynamoDB leaves unprocessed are asked again, with capped, jittered
backoff after an answer that made no progress. Tables that do not exist are not asked for (one
missing table fails a whole BatchGetItem): their blocks read as gaps, and a table deleted between
the check and the read is checked again once.

BatchGetItem answers skip botocore's generic response parser (``lean_batch_get``): a wide render
reads thousands of items, and walking each through the service model cost more CPU than the rest
of the read together; the answer keeps botocore's shape (``B`` values as bytes, ``N`` as strings).

Blocks start on the ``block_span`` grid but a coarse archive's may be longer
(``coarse_block_span``), so series and slots are read from keys starting at
``start - start % coarse_block_span``. Where two blocks of a metric overlap (only data written
before coarse blocks grew: a grid-long block beside a longer one, e.g. a turokd upgraded mid-day)
the earlier-starting, longer block, the newer one, wins slot by slot, and its gaps leave the
other's values visible: blocks are placed latest start first.

Pure boto3 and blocking, like the rest of ``turok_core.storage``.
"""
from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Protocol, Sequence

from botocore.exceptions import ClientError

from turok_core.model.config import TurokConfig
from turok_core.model.timefmt import day_start
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code
from turok_core.storage.block_layout import block_span, coarse_block_span, decode_datapoints, decode_into

if TYPE_CHECKING:
    from turok_core.storage.tables import DayTables

BATCH_GET_KEYS = 100


def lean_batch_get(client: AwsClient) -> None:
    """Make ``client`` parse a successful BatchGetItem answer's items with ``_plain_items``
    instead of botocore's parser (which then reads only the rest: unprocessed keys, capacity)."""
    events = client.meta.events
    # one handler per client, however many stores share it
    events.register("before-parse.dynamodb.BatchGetItem", _parse_items, unique_id="turok-lean-batch-get")


def _parse_items(response_dict: dict, customized_response_dict: dict, **_: object) -> None:
    if response_dict.get("status_code") != 200 or not isinstance(response_dict.get("body"), bytes):
        return
    try:
        document = json.loads(response_dict["body"])
    except ValueError:
        return  # botocore reports it
    responses = document.pop("Responses", None) if isinstance(document, dict) else None
    if not isinstance(responses, dict):
        return
    try:
        customized_response_dict["Responses"] = {table: [_plain_item(item) for item in items]
                                                 for table, items in responses.items()}
    except (TypeError, ValueError, AttributeError):
        return  # not what DynamoDB sends: botocore parses the body it was given, untouched
    response_dict["body"] = json.dumps(document).encode()


def _plain_item(item: dict) -> dict:
    """A DynamoDB JSON item as botocore parses it: binary values base64-decoded (also in sets,
    maps and lists), everything else as sent."""
    for value in item.values():
        _plain_value(value)
    return item


def _plain_value(value: dict) -> None:
    if "B" in value:
        value["B"] = base64.b64decode(value["B"])
    elif "BS" in value:
        value["BS"] = [base64.b64decode(b) for b in value["BS"]]
    elif "M" in value:
        _plain_item(value["M"])
    elif "L" in value:
        for member in value["L"]:
            _plain_value(member)


ItemSink = Callable[[str, list], None]  # (table, the items of one answer)


class BlockReadError(RuntimeError):
    """Keys DynamoDB kept leaving unprocessed after every retry."""


class ReadCalls(Protocol):
    """Where BatchGetItem calls are counted (``WriteStats`` is one)."""

    read_calls: int


class BlockReader:
    """Reads blocks of the day tables in batches; ``BlockStore`` hands its reads here."""

    def __init__(self, client: AwsClient, config: TurokConfig, tables: DayTables,
                 pool: Callable[[], ThreadPoolExecutor], backoff: Callable[[int], None]) -> None:
        self._client = client
        self._config = config
        self._tables = tables
        self._pool = pool
        self._backoff = backoff
        if hasattr(client, "meta"):  # a boto3 client (or a test's wrapper of one)
            lean_batch_get(client)

    def batch_get(self, keys: Sequence[tuple[str, dict]], consistent: bool,
                  stats: Optional[ReadCalls] = None, sink: Optional[ItemSink] = None) -> list[tuple[str, dict]]:
        """BatchGetItem in calls of at most 100 keys, up to ``put_threads`` calls at once (a render
        of 1,000 series over a day is hundreds of calls); (table, item) for the keys that exist.

        ``sink(table, items)``, when given, takes each answer's items as it arrives (in the
        calling thread or a pool thread) and nothing is returned: a wide read then holds no
        item longer than its answer, so they die young instead of filling the collector's
        oldest generation (a full collection per render)."""
        keys = list(keys)
        full_calls = -(-len(keys) // BATCH_GET_KEYS)
        workers = min(max(1, self._config.put_threads), full_calls)
        if workers < 2:
            found, calls = self._batch_get_serial(keys, consistent, sink)
        else:
            # each thread a whole number of 100-key calls: 1,000 keys are 10 calls, not 8 × (100 + 25)
            share = -(-full_calls // workers) * BATCH_GET_KEYS
            parts = [keys[i:i + share] for i in range(0, len(keys), share)]
            found, calls = [], 0
            for items, part_calls in self._pool().map(self._batch_get_serial, parts, [consistent] * len(parts),
                                                      [sink] * len(parts)):
                found.extend(items)
                calls += part_calls
        if stats is not None:
            stats.read_calls += calls
        return found

    def _batch_get_serial(self, keys: Sequence[tuple[str, dict]], consistent: bool,
                          sink: Optional[ItemSink] = None) -> tuple[list[tuple[str, dict]], int]:
        """``batch_get`` in this thread; also the number of calls it made."""
        found: list[tuple[str, dict]] = []
        calls = 0
        pending = list(keys)
        stalls = 0
        attempts = max(1, self._config.write_max_attempts)
        while pending:
            chunk, pending = pending[:BATCH_GET_KEYS], pending[BATCH_GET_KEYS:]
            request: dict[str, dict] = {}
            for table, key in chunk:
                request.setdefault(table, {"Keys": [], "ConsistentRead": consistent})["Keys"].append(key)
            response = self._client.batch_get_item(RequestItems=request)
            calls += 1
            for table, items in response.get("Responses", {}).items():
                if sink is not None:
                    sink(table, items)
                else:
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
        return found, calls

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
        longest = coarse_block_span(step, self._config.block_slots, self._config.coarse_block_slots)
        block_tables: dict[int, str] = {}
        day_tables: dict[int, str] = {}
        for block in range(start - start % longest, end, span):
            day = day_start(block)
            table = day_tables.get(day)
            if table is None:
                table = day_tables[day] = self._tables.table_for(day, step)
            block_tables[block] = table

        # blocks that may overlap (longer than the grid) are placed latest start first, once all
        # are read (module doc); otherwise each as its answer comes (rows start as gaps)
        deferred: list[tuple[int, str, object]] = []

        def place(_table: str, items: list) -> None:
            for item in items:
                row = result.get(item["metric"]["S"])
                attribute = item.get("datapoints", {})
                if row is None:
                    continue
                blob = attribute.get("B", attribute.get("S"))
                if longest == span:
                    decode_into(blob, row, (int(item["start_time"]["N"]) - start) // step)
                else:
                    deferred.append((int(item["start_time"]["N"]), item["metric"]["S"], blob))

        for retry in (True, False):
            present = self._tables.existing(day_tables.values())
            keys = [(table, {"metric": {"S": metric}, "start_time": {"N": str(block)}})
                    for metric in result for block, table in block_tables.items() if table in present]
            try:
                # placing a block twice (a retry after a table vanished) sets the same values
                self.batch_get(keys, consistent=False, sink=place)
                break
            except ClientError as exc:
                if not retry or error_code(exc) != "ResourceNotFoundException":
                    raise
                self._tables.forget(present)  # a table went away since we looked: look again
        deferred.sort(key=lambda entry: -entry[0])
        for block, metric, blob in deferred:
            decode_into(blob, result[metric], (block - start) // step)
        return result

    def fetch_slots(self, step: int, ranges: Iterable[tuple[str, int, int]],
                    consistent: bool = False) -> dict[str, dict[int, float]]:
        """The stored slots of several ``(metric, start, end)`` ranges at ``step``, in one batched read.

        Returns ``{metric: {slot_start: value}}`` holding every known slot of the blocks that
        overlap the ranges (possibly more than asked; gaps are absent). ``consistent`` reads
        what this process has just written (rollups read the finer slots they have just set).
        """
        span = block_span(step, self._config.block_slots)
        longest = coarse_block_span(step, self._config.block_slots, self._config.coarse_block_slots)
        wanted: dict[tuple[str, int], str] = {}
        for metric, start, end in ranges:
            for block in range(start - start % longest, end, span):
                if (metric, block) not in wanted:
                    wanted[(metric, block)] = self._tables.table_for(block, step)
        result: dict[str, dict[int, float]] = {}
        if not wanted:
            return result
        for retry in (True, False):
            present = self._tables.existing(set(wanted.values()))
            keys = [(table, {"metric": {"S": metric}, "start_time": {"N": str(block)}})
                    for (metric, block), table in wanted.items() if table in present]
            try:
                items = self.batch_get(keys, consistent=consistent)
                break
            except ClientError as exc:
                if not retry or error_code(exc) != "ResourceNotFoundException":
                    raise
                self._tables.forget(present)
        # latest start first: an earlier-starting block overlapping it wins (module doc)
        items.sort(key=lambda found: -int(found[1]["start_time"]["N"]))
        for _table, item in items:
            attribute = item.get("datapoints", {})
            start = int(item["start_time"]["N"])
            row = result.setdefault(item["metric"]["S"], {})
            for index, value in enumerate(decode_datapoints(attribute.get("B", attribute.get("S")))):
                if value is not None:
                    row[start + index * step] = value
        return result
