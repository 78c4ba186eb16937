"""Decoding a batch of SQS messages into slot values, refusing bodies DynamoDB could not store.

Each Turok message becomes one slot value: the message's datapoints reduced with its
aggregation. Messages of a batch for the same (metric, resolution, slot) are reduced together,
their datapoints concatenated in the order received. A body that cannot be decoded, or that
carries a message DynamoDB would refuse (a resolution not dividing a day, a name past the key
limit), is listed in ``DecodedBatch.rejected`` with its reason, never raised: it is left
undeleted so the queue's redrive policy moves it to the dead-letter queue. A body repeated
within the batch is listed in ``duplicates`` and counted once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from turok_core.model.aggregation import aggregate
from turok_core.model.message import MessageError, TurokMessage
from turok_core.model.resolution import SECONDS_PER_DAY
from turok_core.wire.codec import decode_body
from turok_core.wire.queues import ReceivedMessage

MAX_METRIC_BYTES = 2048  # DynamoDB's limit for a partition key value


@dataclass(frozen=True)
class Rejected:
    """A body left for the dead-letter queue, and why."""
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


def _check_storable(messages: Iterable[TurokMessage]) -> None:
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
