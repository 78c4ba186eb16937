"""The pool-thread work of the gateway's outbox: encoding released windows, one drain round.

Both run in a thread of the AWS pool and touch no state of the reactor thread: they return what
they did (``Encoded``, ``SendResult``) and the outbox applies it. ``encode_bodies`` encodes a
release so that one message that cannot be encoded sinks no other. ``send_round`` reads the
oldest spooled bodies back where needed (``BodySpool.load`` may run in another thread) and sends
them in SQS batches, in order, stopping at the first batch that fails: it reports which spooled
bodies SQS took, which it refused while taking others of their batch (the outbox's poison
count), and which could not be read back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from turok_core.model.message import TurokMessage
from turok_core.spool.bodies import BodySpool, SpooledBody
from turok_core.spool.segments import SpoolError
from turok_core.wire.codec import encode_messages
from turok_core.wire.queues import MessageQueue, QueueSendError, batch_bodies


@dataclass
class Encoded:
    """What one encode round made."""
    messages: int = 0
    unencodable: int = 0
    bodies: list[str] = field(default_factory=list)


@dataclass
class SendResult:
    """What one drain round did."""
    sent: list[tuple[int, int]] = field(default_factory=list)  # spool keys SQS took
    sent_memory: int = 0  # bodies of the in-memory overflow SQS took
    bytes: int = 0
    refused: list[tuple[int, int]] = field(default_factory=list)  # refused while others passed
    damaged: list[tuple[int, int]] = field(default_factory=list)  # unreadable from the spool
    error: Optional[BaseException] = None


def encode_bodies(messages: Sequence[TurokMessage], limit: int, compression_level: int) -> Encoded:
    """Encode ``messages`` into SQS bodies of at most ``limit`` bytes; one message that cannot
    be encoded sinks no other."""
    result = Encoded(messages=len(messages))
    try:
        result.bodies = encode_messages(messages, limit, compression_level)
    except Exception:
        for message in messages:
            try:
                result.bodies.extend(encode_messages([message], limit))
            except Exception:
                result.unencodable += 1
    return result


def send_round(queue: MessageQueue, spool: BodySpool, entries: Sequence[SpooledBody], memory: Sequence[str],
               max_batch_bytes: int) -> SendResult:
    """Send ``memory`` (bodies the spool could not take) if any, else the spooled ``entries``,
    read back if needed, in SQS batches, in order."""
    result = SendResult()
    if memory:
        try:
            queue.send(memory)
        except Exception as exc:
            result.error = exc
        else:
            result.sent_memory = len(memory)
            result.bytes = sum(map(len, memory))
        return result
    keys, bodies = [], []
    for entry in entries:
        try:
            bodies.extend(spool.load([entry]))
        except SpoolError:  # damaged on disk since it was written: dropped, never blocking the rest
            result.damaged.append(entry.key)
        else:
            keys.append(entry.key)
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
            break
        except Exception as exc:
            result.error = exc
            break
        result.sent.extend(batch_keys)
        result.bytes += sum(map(len, batch))
    return result
