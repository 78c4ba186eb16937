"""DynamoDB access for Turok's blocks: the day tables, and ``BlockStore``, the face callers use.

Blocks live in one table per UTC day and resolution, ``<prefix><joiner><DD-MM-YYYY><joiner><resolution>``
(``table_names.py``), keyed by ``metric`` (S, hash) and ``start_time`` (N, range). ``DayTables``
creates a table on first write and waits until it is ACTIVE, and remembers which tables exist
(a table seen present is trusted for ``TABLE_PRESENT_TTL``, one seen missing for
``TABLE_ABSENT_TTL``, so a new day table is found soon and a deleted one is caught on its next use).

``BlockStore`` composes the day tables with the batched merges (``writes.py``) and the batched
reads (``reads.py``) and shares between them the thread pool of parallel calls and one backoff
(``BACKOFF``). Pure boto3 and blocking: services call it from their AWS thread pool, and one store
may be used by many threads at once. ``memory.MemoryBlockStore`` has the same interface.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Optional, Sequence

from botocore.exceptions import ClientError

from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import Backoff, error_code
from turok_core.storage.block_layout import archive_span, block_span
from turok_core.storage.block_starts import BlockStarts
from turok_core.storage.reads import BlockReader, BlockReadError
from turok_core.storage.table_catalog import list_table_names
from turok_core.storage.table_names import check_table_affixes, table_name
from turok_core.storage.writes import BlockMerger, BlockValues, BlockWriteError, MergedBlocks, WriteStats

__all__ = ["BACKOFF", "BlockReadError", "BlockStore", "BlockWriteError", "DayTables", "WriteStats"]

BACKOFF = Backoff(base=0.05, cap=5.0)
TABLE_PRESENT_TTL = 300.0  # seconds a table seen to exist is trusted (a deletion is caught on read)
TABLE_ABSENT_TTL = 10.0  # seconds a missing table is believed missing (new day tables appear)
TABLE_WAIT_POLLS = 240  # DescribeTable polls while a table becomes ACTIVE
TABLE_WAIT_INTERVAL = 0.5
READABLE_STATUSES = ("ACTIVE", "UPDATING")


class DayTables:
    """The day tables: their names, creating them, and a short-lived cache of which exist."""

    def __init__(self, client: AwsClient, config: TurokConfig, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # a prefix or joiner DynamoDB refuses in a table name fails here, not at every write
        check_table_affixes(config.table_prefix, config.table_joiner)
        self._client = client
        self._config = config
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._known: set[str] = set()  # tables this store made sure of: writes skip DescribeTable
        self._checked: dict[str, tuple[bool, float]] = {}  # name → (exists, valid until)
        self.starts = BlockStarts(client, lambda attempt: sleep(BACKOFF.delay(attempt)))

    def table_for(self, timestamp: int, step: int) -> str:
        """The day table holding ``timestamp`` at resolution ``step``."""
        return table_name(self._config.table_prefix, self._config.table_joiner, timestamp, step)

    def ensure(self, name: str) -> bool:
        """Create table ``name`` unless it exists, and return once it is ACTIVE; True when this
        call created it."""
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
        if created:
            self.starts.created(name)
        with self._lock:
            self._known.add(name)
            self._checked[name] = (True, self._clock() + TABLE_PRESENT_TTL)
        return created

    def existing(self, names: Iterable[str]) -> set[str]:
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

    def forget(self, names: Iterable[str]) -> None:
        """Drop cached knowledge of tables after DynamoDB said one of them is missing."""
        names = list(names)
        self.starts.forget(names)
        with self._lock:
            for name in names:
                self._known.discard(name)
                self._checked.pop(name, None)


class BlockStore:
    """Turok's blocks in DynamoDB day tables ``<prefix><joiner><DD-MM-YYYY><joiner><resolution>``
    (``ValueError`` when made with a prefix or joiner DynamoDB refuses in a table name)."""

    def __init__(self, client: AwsClient, config: TurokConfig, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._config = config
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None  # parallel puts and gets, made on first use
        self._tables = DayTables(client, config, sleep, clock)
        self._reader = BlockReader(client, config, self._tables, self._put_pool, self._backoff)
        self._merger = BlockMerger(client, config, self._tables, self._reader, self._put_pool, self._backoff)

    @property
    def config(self) -> TurokConfig:
        return self._config

    def table_for(self, timestamp: int, step: int) -> str:
        """The day table holding ``timestamp`` at resolution ``step``."""
        return self._tables.table_for(timestamp, step)

    def ensure_table(self, name: str) -> None:
        """Create table ``name`` unless it exists, and return once it is ACTIVE."""
        self._tables.ensure(name)

    def existing_tables(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` that exist and can be read (cached for a short while)."""
        return self._tables.existing(names)

    def table_names(self) -> list[str]:
        """Every table name in the account and region (ListTables, every page; any prefix)."""
        return list_table_names(self._client)

    def span(self, step: int) -> int:
        """Seconds per block at resolution ``step``: the key grid, and the base archive's blocks."""
        return block_span(step, self._config.block_slots)

    def archive_span(self, step: int, level: int) -> int:
        """Seconds per block of a metric's archive ``level`` at ``step`` (``block_layout.archive_span``)."""
        return archive_span(step, level, self._config.block_slots, self._config.coarse_block_slots)

    def block_starts(self, table: str) -> Optional[frozenset[int]]:
        """The block starts recorded in ``table`` (``block_starts.py``: a consistent read); None
        when its record is not trusted."""
        return self._tables.starts.read(table)

    def write_slots(self, slots: Iterable[tuple[str, int, int, float]], assume_new: bool = False,
                    exclusive: bool = False, fill_gaps: bool = False) -> WriteStats:
        """Set slot values, ``(metric, step, slot_start, value)`` each; see ``BlockMerger.write_slots``."""
        return self._merger.write_slots(slots, assume_new, exclusive, fill_gaps)

    def write_blocks(self, blocks: Iterable[tuple[str, int, int, dict[int, float]]],
                     assume_new: bool = True, exclusive: bool = False, fill_gaps: bool = False,
                     merged: Optional[MergedBlocks] = None) -> WriteStats:
        """Set the slots of whole blocks, ``(metric, step, block_start, {slot index: value})`` each;
        see ``BlockMerger.write_blocks``."""
        return self._merger.write_blocks(blocks, assume_new, exclusive, fill_gaps, merged)

    def put_blocks(self, blocks: Iterable[tuple[str, int, int, BlockValues]]) -> WriteStats:
        """Write whole new blocks without a read, batched; see ``BlockMerger.put_blocks``."""
        return self._merger.put_blocks(blocks)

    def fetch_series(self, metrics: Sequence[str], step: int, start: int,
                     end: int) -> dict[str, list[Optional[float]]]:
        """Each metric's slot values for ``start, start+step, … < end``, None for gaps;
        see ``BlockReader.fetch_series``."""
        return self._reader.fetch_series(metrics, step, start, end)

    def fetch_slots(self, step: int, ranges: Iterable[tuple[str, int, int]],
                    consistent: bool = False) -> dict[str, dict[int, float]]:
        """``{metric: {slot_start: value}}`` of the blocks overlapping ``(metric, start, end)``
        ranges; see ``BlockReader.fetch_slots``."""
        return self._reader.fetch_slots(step, ranges, consistent)

    def _put_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, self._config.put_threads), thread_name_prefix="turok-put")
            return self._pool

    def _backoff(self, attempt: int) -> None:
        self._sleep(BACKOFF.delay(attempt))
