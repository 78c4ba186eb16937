"""The pool-thread work of the gateway's outbox: encoding released windows, one drain round.

Both run in a thread of the AWS pool and touch no state of the reactor thread: they return what
they did (``Encoded``, ``SendResult``) and the outbox applies it. ``encode_bodies`` encodes a
release so that one message that cannot be encoded sinks no other. ``send_round`` reads the
oldest spooled bodies back where needed (``BodySpool.load`` may run in another thread) and sends
them in SQS batches, in order, each to its partition's queue, stopping at the first batch that
fails: it reports which spooled bodies SQS took, which it refused while taking others of their
batch (the outbox's poison count), and which could not be read back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from turok_core.model.message import TurokMessage
from turok_core.spool.bodies import BodySpool, SpooledBody
from turok_core.spool.segments import SpoolError
from turok_core.wire.codec import encode_messages
from turok_core.wire.partitions import split_by_partition
from turok_core.wire.queues import Queue, QueueSendError, batch_bodies


@dataclass
class Encoded:
    """What one encode round made."""
    messages: int = 0
    unencodable: int = 0
    bodies: list[str] = field(default_factory=list)
    partitions: Optional[list[int]] = None  # each body's partition; None: one partition


@dataclass
class SendResult:
    """What one drain round did."""
    sent: list[tuple[int, int]] = field(default_factory=list)  # spool keys SQS took
    sent_memory: int = 0  # bodies of the in-memory overflow SQS took
    bytes: int = 0
    refused: list[tuple[int, int]] = field(default_factory=list)  # refused while others passed
    damaged: list[tuple[int, int]] = field(default_factory=list)  # unreadable from the spool
    error: Optional[BaseException] = None


def _encode(messages: Sequence[TurokMessage], limit: int, compression_level: int, result: Encoded) -> list[str]:
    try:
        return encode_messages(messages, limit, compression_level)
    except Exception:
        bodies = []
        for message in messages:
            try:
                bodies.extend(encode_messages([message], limit))
            except Exception:
                result.unencodable += 1
        return bodies


def encode_bodies(messages: Sequence[TurokMessage], limit: int, compression_level: int,
                  partitions: int = 1) -> Encoded:
    """Encode ``messages`` into SQS bodies of at most ``limit`` bytes, each partition's messages
    into bodies of their own; one message that cannot be encoded sinks no other."""
    result = Encoded(messages=len(messages))
    if partitions <= 1:
        result.bodies = _encode(messages, limit, compression_level, result)
        return result
    result.partitions = []
    for partition, group in sorted(split_by_partition(messages, [m.metric for m in messages], partitions).items()):
        bodies = _encode(group, limit, compression_level, result)
        result.bodies.extend(bodies)
        result.partitions.extend([partition] * len(bodies))
    return result


def _runs(partitions: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(partition, start, end)`` of each run of consecutive equal partitions."""
    runs: list[tuple[int, int, int]] = []
    for index, partition in enumerate(partitions):
        if runs and runs[-1][0] == partition:
            runs[-1] = (partition, runs[-1][1], index + 1)
        else:
            runs.append((partition, index, index + 1))
    return runs


def send_round(queues: Sequence[Queue], spool: BodySpool, entries: Sequence[SpooledBody], memory: Sequence[str],
               max_batch_bytes: int, memory_partitions: Optional[Sequence[int]] = None) -> SendResult:
    """Send ``memory`` (bodies the spool could not take) if any, else the spooled ``entries``,
    read back if needed, in SQS batches, in order, each body to its partition's queue
    (``queues[p]``; ``memory_partitions`` gives the memory bodies' partitions, None: all 0)."""
    result = SendResult()
    if memory:
        parts = list(memory_partitions) if memory_partitions is not None else [0] * len(memory)
        for partition, start, end in _runs(parts):
            try:
                queues[partition].send(memory[start:end])
            except Exception as exc:
                result.error = exc
                break
            result.sent_memory = end
            result.bytes += sum(map(len, memory[start:end]))
        return result
    keys, bodies, parts = [], [], []
    for entry in entries:
        try:
            bodies.extend(spool.load([entry]))
        except SpoolError:  # damaged on disk since it was written: dropped, never blocking the rest
            result.damaged.append(entry.key)
        else:
            keys.append(entry.key)
            parts.append(entry.partition)
    for partition, start, end in _runs(parts):
        if not _send_run(queues[partition], keys[start:end], bodies[start:end], max_batch_bytes, result):
            break
    return result


def _send_run(queue: Queue, keys: Sequence[tuple[int, int]], bodies: Sequence[str], max_batch_bytes: int,
              result: SendResult) -> bool:
    """Send one partition's run of spooled bodies in batches; False at the first that fails."""
    index = 0
    for batch in batch_bodies(bodies, max_batch_bytes):
        batch_keys = keys[index:index + len(batch)]
        index += len(batch)
        try:
            queue.send(batch)
        except QueueSendError as exc:
            result.error = exc
            unsent = set(exc.bodies)
            for key, body in zip(batch_keys, batch):
                if body not in unsent:
                    result.sent.append(key)
                    result.bytes += len(body)
                elif len(unsent) < len(batch):  # SQS took others of this batch: this one is refused
                    result.refused.append(key)
            return False
        except Exception as exc:
            result.error = exc
            return False
        result.sent.extend(batch_keys)
        result.bytes += sum(map(len, batch))
    return True
