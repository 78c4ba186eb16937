"""turokd's work on one batch of SQS messages, free of Twisted: decode, aggregate, store.

Each Turok message becomes one slot value: the message's datapoints reduced with its
aggregation. Messages of a batch for the same (metric, resolution, slot) are reduced together,
their datapoints concatenated in the order received. Slots are *set*, never added to, so a
redelivered message writes the same values again and leaves the stored data unchanged.

With the schemas given, each batch then rolls its base slots up into every coarser archive of
each metric's policy (``write_rollups``): coarse slots recomputed from the finer slots they cover,
as whisper propagates (``rollup.py``), so replays and late points recompute the same values.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from .aggregation import aggregate
from .codec import decode_body
from .message import MessageError
from .queues import ReceivedMessage
from .resolution import SECONDS_PER_DAY
from .rollup import coarse_slots, rollup_slots
from .schemas import SchemaError, SchemaSet
from .storage import BlockStore, WriteStats

MAX_METRIC_BYTES = 2048  # DynamoDB's limit for a partition key value


@dataclass(frozen=True)
class Rejected:
    message_id: str
    receipt_handle: str
    receive_count: int
    reason: str


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


def process_batch(received: Sequence[ReceivedMessage], store: BlockStore,
                  schemas: Optional[SchemaSet] = None) -> BatchResult:
    """Store what a batch of SQS messages carries; say which messages may now be deleted.

    A body that cannot be decoded is rejected (with its reason) and must not be deleted, so the
    queue's redrive policy moves it to the dead-letter queue; the other bodies are unaffected.
    Raises when the write fails: then no message may be deleted. With ``schemas``, the batch's
    slots are also rolled up into the coarser archives (``write_rollups``) before returning.
    """
    result = BatchResult()
    seen_bodies: set[str] = set()
    # (metric, step, slot) → [aggregation type, datapoints of every message for that slot]
    windows: dict[tuple[str, int, int], tuple[str, list]] = {}
    for sqs_message in received:
        body = sqs_message.body
        if body in seen_bodies:
            # the same body twice in one batch (a producer's retried send): count its data once,
            # which is what storing it twice in two batches gives too
            result.deletable.append(sqs_message.receipt_handle)
            continue
        try:
            messages = decode_body(body)
            _check_storable(messages)
        except MessageError as exc:
            result.rejected.append(Rejected(sqs_message.message_id, sqs_message.receipt_handle,
                                            sqs_message.receive_count, str(exc)))
            continue
        seen_bodies.add(body)
        result.deletable.append(sqs_message.receipt_handle)
        result.messages += len(messages)
        for message in messages:
            key = (message.metric, message.resolution, message.start_time)
            window = windows.get(key)
            if window is None:
                windows[key] = (message.aggregation_type, list(message.datapoints))
            else:
                window[1].extend(message.datapoints)
    slots = [(metric, step, slot, aggregate(kind, values))
             for (metric, step, slot), (kind, values) in windows.items()]
    if slots:
        result.stats = store.write_slots(slots)
    result.slots = len(slots)
    if slots and schemas is not None:
        result.rollup_slots = write_rollups(store, schemas, windows, result.stats)
    result.metrics = {metric for metric, _step, _slot in windows}
    return result


ROLLUP_VERIFY_ROUNDS = 8  # recomputations of coarse slots whose finer data keeps changing under us


def _read_finer(store: BlockStore, ranges: dict[int, list[tuple[str, int, int]]]) -> dict[int, dict]:
    return {step: store.fetch_slots(step, wanted, consistent=True) for step, wanted in ranges.items()}


def _covered(finer: dict[int, dict], plan: tuple) -> list:
    """The finer values a rollup plan reads, in order."""
    metric, _policy, _level, finer_step, coarse_step, coarse = plan
    values = finer[finer_step].get(metric, {})
    return [values.get(t) for c in sorted(coarse) for t in range(c, c + coarse_step, finer_step)]


def write_rollups(store: BlockStore, schemas: SchemaSet, touched: Iterable[tuple[str, int, int]],
                  stats: Optional[WriteStats] = None) -> int:
    """Recompute, from the stored finer slots, every coarse slot holding a touched slot.

    ``touched`` holds ``(metric, step, slot_start)`` of base slots just written. One stage per
    archive level: every metric's affected coarse slots are computed from one batched consistent
    read of the finer archive and written with one ``write_slots`` call, then the next level
    starts from the coarse slots that got a value (a slot left as it was changes nothing further
    up). After its write, a stage reads the finer slots again and recomputes the coarse slots whose
    input changed meanwhile (another turokd's write), until nothing changed (see ``rollup.py``).
    Metrics whose step is not an archive of their policy (or that match no schema) are not rolled
    up; a slot written at a coarser archive's step is rolled up from there. Returns the coarse
    slot values written.
    """
    policies: dict[str, object] = {}
    pending: dict[tuple[str, int], set[int]] = {}  # (metric, archive index) → finer slots touched
    for metric, step, slot in touched:
        policy = policies.get(metric, False)
        if policy is False:
            try:
                policy = policies[metric] = schemas.policy_for(metric)
            except SchemaError:
                policy = policies[metric] = None
        if policy is None:
            continue
        for level, archive in enumerate(policy.archives[:-1]):
            if archive.step == step:
                pending.setdefault((metric, level), set()).add(slot)
    written = 0
    while pending:
        # one level per metric per stage, the finest first: a coarser level waits for its input
        lowest: dict[str, int] = {}
        for metric, level in pending:
            lowest[metric] = min(level, lowest.get(metric, level))
        plans = []
        ranges: dict[int, list[tuple[str, int, int]]] = {}
        for metric, level in lowest.items():
            policy = policies[metric]
            finer_step, coarse_step = policy.archives[level].step, policy.archives[level + 1].step
            coarse = coarse_slots(pending.pop((metric, level)), coarse_step)
            ranges.setdefault(finer_step, []).extend((metric, c, c + coarse_step) for c in coarse)
            plans.append((metric, policy, level, finer_step, coarse_step, coarse))
        finer = _read_finer(store, ranges)
        for _round in range(ROLLUP_VERIFY_ROUNDS):
            writes: list[tuple[str, int, int, float]] = []
            for metric, policy, level, finer_step, coarse_step, coarse in plans:
                values = rollup_slots(finer[finer_step].get(metric, {}), finer_step, coarse_step, coarse,
                                      policy.aggregation_type, policy.x_files_factor)
                writes.extend((metric, coarse_step, start, value) for start, value in values)
                if values and level + 2 < len(policy.archives):
                    pending.setdefault((metric, level + 1), set()).update(start for start, _ in values)
            if writes:
                level_stats = store.write_slots(writes)
                if stats is not None:
                    stats.add(level_stats)
                written += len(writes)
            # Another turokd may have set finer slots after our read and written its coarse value
            # before ours: read again, and recompute what changed, so the last coarse write of
            # every slot is computed from the finer data as it finally is.
            again = _read_finer(store, ranges)
            plans = [plan for plan in plans if _covered(again, plan) != _covered(finer, plan)]
            if not plans:
                break
            finer = again
    return written


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
