"""turokd's work, free of Twisted: decode SQS batches, hold blocks, write them once, roll them up.

Each Turok message becomes one slot value: the message's datapoints reduced with its
aggregation. Messages of a batch for the same (metric, resolution, slot) are reduced together,
their datapoints concatenated in the order received. Slots are *set*, never added to, so a
redelivered message writes the same values again and leaves the stored data unchanged.

``BlockWriter`` is turokd's core: ``accept`` puts a batch's slots into the open blocks
(``open_blocks.py``) and holds its SQS messages; ``close`` writes the blocks that have closed,
each in one merge, then recomputes the coarse blocks that close with them (``rollup_writer.py``),
and only then hands out the messages that may be deleted. ``process_batch`` is the same path with
everything closing at once (tools and tests).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from turok_core.model.aggregation import aggregate
from turok_core.wire.codec import decode_body
from turok_core.model.config import TurokConfig
from turok_core.model.message import MessageError
from turok_core.turokd.open_blocks import OpenBlocks
from turok_core.wire.queues import ReceivedMessage
from turok_core.model.resolution import SECONDS_PER_DAY
from turok_core.turokd.rollup_writer import PendingRollups, RollupPlan, rollup_blocks
from turok_core.model.schemas import SchemaSet
from turok_core.storage.tables import BlockStore, WriteStats

MAX_METRIC_BYTES = 2048  # DynamoDB's limit for a partition key value


@dataclass(frozen=True)
class Rejected:
    message_id: str
    receipt_handle: str
    receive_count: int
    reason: str


@dataclass
class DecodedBatch:
    """What a batch of SQS messages carries, reduced to one value per slot."""
    slots: dict[tuple[str, int, int], float] = field(default_factory=dict)  # (metric, step, slot) → value
    accepted: list[tuple[str, list[tuple[int, int]]]] = field(default_factory=list)  # (receipt, [(step, slot)])
    duplicates: list[str] = field(default_factory=list)  # receipts of bodies seen earlier in the batch
    rejected: list[Rejected] = field(default_factory=list)  # bodies left for the dead-letter queue
    messages: int = 0  # Turok messages decoded from the accepted bodies
    held: list[tuple[float, str]] = field(default_factory=list)  # (deletable from, receipt), once held

    @property
    def metrics(self) -> set[str]:
        return {metric for metric, _step, _slot in self.slots}


@dataclass
class BatchResult:
    deletable: list[str] = field(default_factory=list)  # receipt handles whose data is stored
    rejected: list[Rejected] = field(default_factory=list)  # bodies left for the dead-letter queue
    metrics: set[str] = field(default_factory=set)  # every metric name the stored messages carry
    messages: int = 0  # Turok messages decoded from the accepted bodies
    slots: int = 0  # slot values written
    rollup_slots: int = 0  # coarse slot values written by the rollups
    stats: WriteStats = field(default_factory=WriteStats)


def _check_storable(messages) -> None:
    """Refuse a body whose messages DynamoDB would refuse, so it cannot fail a whole batch forever."""
    for message in messages:
        if SECONDS_PER_DAY % message.resolution:
            raise MessageError(f"resolution {message.resolution}s of {message.metric!r} does not divide a day")
        if len(message.metric.encode("utf-8")) > MAX_METRIC_BYTES:
            raise MessageError(f"metric name of {len(message.metric)} characters is too long to store")


def decode_batch(received: Sequence[ReceivedMessage]) -> DecodedBatch:
    """Decode and reduce a batch; undecodable bodies are listed with their reason, not raised."""
    batch = DecodedBatch()
    seen_bodies: set[str] = set()
    # (metric, step, slot) → [aggregation type, datapoints of every message for that slot]
    windows: dict[tuple[str, int, int], tuple[str, list]] = {}
    for sqs_message in received:
        body = sqs_message.body
        if body in seen_bodies:
            # the same body twice in one batch (a producer's retried send): count its data once,
            # which is what storing it twice in two batches gives too
            batch.duplicates.append(sqs_message.receipt_handle)
            continue
        try:
            messages = decode_body(body)
            _check_storable(messages)
        except MessageError as exc:
            batch.rejected.append(Rejected(sqs_message.message_id, sqs_message.receipt_handle,
                                           sqs_message.receive_count, str(exc)))
            continue
        seen_bodies.add(body)
        batch.messages += len(messages)
        batch.accepted.append((sqs_message.receipt_handle,
                               list({(m.resolution, m.start_time) for m in messages})))
        for message in messages:
            key = (message.metric, message.resolution, message.start_time)
            window = windows.get(key)
            if window is None:
                windows[key] = (message.aggregation_type, list(message.datapoints))
            else:
                window[1].extend(message.datapoints)
    batch.slots = {key: aggregate(kind, values) for key, (kind, values) in windows.items()}
    return batch


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
    minutes. ``accept`` may be called from several threads; ``close`` from one at a time.
    """

    def __init__(self, store: BlockStore, config: TurokConfig, schemas: Optional[SchemaSet] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.open = OpenBlocks(config.block_slots, config.block_close_delay_seconds)
        self.rollups = PendingRollups(schemas, config.block_slots, config.block_close_delay_seconds) \
            if schemas is not None else None

    def accept(self, received: Sequence[ReceivedMessage]) -> DecodedBatch:
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


def process_batch(received: Sequence[ReceivedMessage], store: BlockStore,
                  schemas: Optional[SchemaSet] = None, config: Optional[TurokConfig] = None) -> BatchResult:
    """Store what a batch of SQS messages carries at once; say which messages may be deleted.

    ``BlockWriter`` with every block closing immediately: the base slots are merged into their
    blocks, and with ``schemas`` rolled up through every coarser archive. A body that cannot be
    decoded is rejected (with its reason) and must not be deleted, so the queue's redrive policy
    moves it to the dead-letter queue. Raises when the write fails: then nothing may be deleted.
    """
    writer = BlockWriter(store, config if config is not None else store.config, schemas)
    batch = writer.accept(received)
    closed = writer.close_all()
    return BatchResult(deletable=batch.duplicates + closed.deletable, rejected=batch.rejected,
                       metrics=batch.metrics, messages=batch.messages, slots=len(batch.slots),
                       rollup_slots=closed.rollup_slots, stats=closed.stats)


class Announcer:
    """Which metric names still need announcing to the index queue.

    ``new_names`` hands out names neither announced nor being announced (plus those whose send
    failed), so concurrent pollers do not announce a name twice; ``mark_announced`` records a
    successful send and ``announce_failed`` puts names back for the next call. The memory is
    bounded: past ``max_names`` it starts over, and announcing a name again is harmless. It also
    starts over at each UTC day (by ``clock``): the keeper drops from the index names with no
    data left, and a name that comes back must be announced again.
    """

    def __init__(self, max_names: int = 2_000_000, clock: Callable[[], float] = time.time) -> None:
        self._announced: set[str] = set()
        self._in_flight: set[str] = set()
        self._failed: dict[str, None] = {}  # insertion-ordered set
        self._max_names = max_names
        self._clock = clock
        self._day = int(clock()) // SECONDS_PER_DAY

    def new_names(self, names: Iterable[str]) -> list[str]:
        """Names to announce now; they count as in flight until marked announced or failed."""
        day = int(self._clock()) // SECONDS_PER_DAY
        if day != self._day:
            self._day, self._announced = day, set()
        announced, in_flight = self._announced, self._in_flight
        fresh = dict.fromkeys(self._failed)
        self._failed = {}
        for name in names:
            if name not in announced and name not in in_flight:
                fresh[name] = None
        in_flight.update(fresh)
        return list(fresh)

    def mark_announced(self, names: Iterable[str]) -> None:
        """Record that ``names`` reached the index queue."""
        if len(self._announced) >= self._max_names:
            self._announced = set()
        for name in names:
            self._in_flight.discard(name)
            self._announced.add(name)

    def announce_failed(self, names: Iterable[str]) -> None:
        """The send of ``names`` failed: hand them out again on the next ``new_names``."""
        for name in names:
            if name in self._in_flight:
                self._in_flight.discard(name)
                self._failed[name] = None

    def __len__(self) -> int:
        return len(self._announced)
