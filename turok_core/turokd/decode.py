"""Decoding a batch of SQS messages into slot values, refusing bodies DynamoDB could not store.

Each Turok message becomes one slot value: the message's datapoints reduced with its
aggregation. Messages of a batch for the same (metric, resolution, slot) are reduced together,
their datapoints concatenated in the order received (with the first one's aggregation). Bodies
are decoded in columns (``codec.decode_columns``) and kept so: ``DecodedBatch.windows`` maps
each (step, slot) to ``{metric: value}``, built a column at a time, not an object per point.
A body that cannot be decoded, or that carries a message DynamoDB would refuse (a resolution
not dividing a day, a name past the key limit), is listed in ``DecodedBatch.rejected`` with its
reason, never raised: it is left undeleted so the queue's redrive policy moves it to the
dead-letter queue. A body repeated within the batch is listed in ``duplicates`` and counted once.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Iterable, Sequence, cast

from turok_core.model.aggregation import aggregate
from turok_core.model.message import MessageError
from turok_core.model.resolution import SECONDS_PER_DAY
from turok_core.wire.codec import Column, decode_columns
from turok_core.wire.queues import ReceivedMessage

MAX_METRIC_BYTES = 2048  # DynamoDB's limit for a partition key value


@dataclass(frozen=True)
class Rejected:
    """A body left for the dead-letter queue, and why."""
    message_id: str
    receipt_handle: str
    receive_count: int
    reason: str


Windows = dict[tuple[int, int], dict[str, float]]  # (step, slot) → {metric: value}


@dataclass
class DecodedBatch:
    """What a batch of SQS messages carries, reduced to one value per slot, in columns."""
    windows: Windows = field(default_factory=dict)
    accepted: list[tuple[str, list[tuple[int, int]]]] = field(default_factory=list)  # (receipt, [(step, slot)])
    duplicates: list[str] = field(default_factory=list)  # receipts of bodies seen earlier in the batch
    rejected: list[Rejected] = field(default_factory=list)  # bodies left for the dead-letter queue
    messages: int = 0  # Turok messages decoded from the accepted bodies
    held: list[tuple[float, str]] = field(default_factory=list)  # (deletable from, receipt), once held
    moved: int = 0  # slot values moved to a coarser archive by their age (turokd/backfill.py)

    @property
    def metrics(self) -> set[str]:
        return set().union(*self.windows.values())

    @property
    def slot_count(self) -> int:
        """Slot values in the batch (one per metric, step and slot)."""
        return sum(map(len, self.windows.values()))


def _check_storable(columns: Iterable[Column]) -> None:
    """Refuse a body whose messages DynamoDB would refuse, so it cannot fail a whole batch forever
    (names past the key limit are refused by ``decode_columns``, which reads their lengths)."""
    for column in columns:
        if SECONDS_PER_DAY % column.step:
            raise MessageError(f"resolution {column.step}s of {column.names[0]!r} does not divide a day")


class _Window:
    """The values of one (step, slot) in a batch: a value per metric while each has one message,
    the datapoints of every message (and the first one's aggregation) once a metric has more."""
    __slots__ = ("aggregation", "values", "several", "lists")

    def __init__(self, column: Column) -> None:
        self.aggregation = column.aggregation
        # a window of several values is a list, which an array('d') of values never holds
        self.lists = type(column.values) is not array
        self.several: dict[str, tuple[str, list]] = {}  # metric → (aggregation, datapoints in order)
        self.values: dict[str, object] = dict(zip(column.names, column.values))  # the usual case
        if len(self.values) != len(column.names):  # a metric twice in the column
            self.values = {}
            self.add(column)

    def add(self, column: Column) -> None:
        values = self.values
        self.lists = self.lists or type(column.values) is not array
        new = dict(zip(column.names, column.values))
        # dict views' isdisjoint walks the smaller side (a set's walks any dict it is given whole)
        if column.aggregation == self.aggregation and len(new) == len(column.names) \
                and new.keys().isdisjoint(values.keys()) and new.keys().isdisjoint(self.several.keys()):
            values.update(new)  # the usual case: a column at a time
            return
        for name, value in zip(column.names, column.values):  # rare: a metric in two messages
            datapoints = value if type(value) is list else [value]
            if name in self.several:
                self.several[name][1].extend(datapoints)
            elif name in values:  # every metric in values has the window's first aggregation
                earlier = values.pop(name)
                self.several[name] = (self.aggregation,
                                      (list(earlier) if type(earlier) is list else [earlier]) + datapoints)
            elif column.aggregation != self.aggregation:
                self.several[name] = (column.aggregation, list(datapoints))
            else:
                values[name] = value

    def reduced(self) -> dict[str, float]:
        """One value per metric: a window of several values reduced by its aggregation."""
        values = self.values
        aggregation = self.aggregation
        for name in [name for name, value in values.items() if type(value) is list] if self.lists else ():
            values[name] = aggregate(aggregation, cast(list, values[name]))
        for name, (kind, datapoints) in self.several.items():
            values[name] = aggregate(kind, datapoints)
        return cast(dict[str, float], values)


def decode_batch(received: Sequence[ReceivedMessage]) -> DecodedBatch:
    """Decode and reduce a batch; undecodable bodies are listed with their reason, not raised."""
    batch = DecodedBatch()
    seen_bodies: set[str] = set()
    windows: dict[tuple[int, int], _Window] = {}
    for sqs_message in received:
        body = sqs_message.body
        if body in seen_bodies:
            # the same body twice in one batch (a producer's retried send): count its data once,
            # which is what storing it twice in two batches gives too
            batch.duplicates.append(sqs_message.receipt_handle)
            continue
        try:
            columns = decode_columns(body, MAX_METRIC_BYTES)
            _check_storable(columns)
        except MessageError as exc:
            batch.rejected.append(Rejected(sqs_message.message_id, sqs_message.receipt_handle,
                                           sqs_message.receive_count, str(exc)))
            continue
        seen_bodies.add(body)
        batch.messages += sum(len(column.names) for column in columns)
        batch.accepted.append((sqs_message.receipt_handle, list({(c.step, c.slot) for c in columns})))
        for column in columns:
            window = windows.get((column.step, column.slot))
            if window is None:
                windows[(column.step, column.slot)] = _Window(column)
            else:
                window.add(column)
    batch.windows = {key: window.reduced() for key, window in windows.items()}
    return batch
