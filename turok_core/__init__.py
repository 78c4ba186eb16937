"""turok-lib: the pure heart of Turok, one subpackage per stage, and the face other producers use.

The stages, in the order data flows: ``model`` (config, schemas, the message, aggregation,
resolutions and time, metric names), ``parse`` and ``statsd`` (bytes into ``ParsedLines``),
``windows`` (points into resolution-aligned windows), ``spool`` (the gateway's journal),
``wire`` (the SQS codec, announcements, the cache-query protocol), ``turokd`` (decode, open
blocks, block writer, rollups), ``storage`` (DynamoDB tables and blocks), ``index`` (the S3 name
index), ``runtime`` (what the daemons share: consumer loop, threads, retries, self-metrics) and
``dev`` (the local stack). Only the ``service.py`` files and ``runtime`` touch the Twisted
reactor; the rest is plain Python with an injectable clock.

A program that produces metrics itself can feed turokd without the gateway, with the names
below, all importable from ``turok_core`` (loaded on first use, so ``import turok_core`` costs
nothing)::

    import time

    from turok_core import (MessageQueue, TurokMessage, WindowBuffer, encode_messages, load_config,
                            load_schemas, make_client, partition_queue_name, split_by_partition)

    config = load_config()                      # [turok] INI file and TUROK_* variables
    schemas = load_schemas(config)              # carbon's storage-schemas/aggregation files

    def policy(name):                           # (base step, aggregation) of a metric
        found = schemas.policy_for(name)
        return found.step, found.aggregation_type

    windows = WindowBuffer(policy, config.window_grace_seconds)
    windows.add_points(["app.requests"], [1.0], [1_700_000_000])
    messages = list(windows.release(time.time()))  # closed windows, as TurokMessage-s
    messages.append(TurokMessage("app.up", 1_700_000_000, [1.0], 10, "last"))
    sqs = make_client("sqs", config)
    names = [message.metric for message in messages]  # each metric to its partition's queue
    for partition, group in split_by_partition(messages, names, config.queue_partitions).items():
        queue = MessageQueue.from_config(sqs, config, partition_queue_name(config, partition))
        queue.send(encode_messages(group, config.sqs_max_message_bytes))

``TurokMessage`` is one metric's values for one window (``turok_core.model.message``);
``WindowBuffer`` groups points into windows by each metric's base resolution and aggregation
and releases them once their slot and grace have passed (``turok_core.windows.buffer``);
``encode_messages`` packs messages (or a released ``WindowBatch``) into as few SQS bodies as
fit, and ``decode_body`` reads one back (``turok_core.wire.codec``); ``MessageQueue`` sends
bodies to an SQS queue with batching and retries (``turok_core.wire.queues``); ``make_client``
builds a boto3 client from a ``TurokConfig`` (``turok_core.runtime.aws``); ``partition_of``,
``split_by_partition`` and ``partition_queue_name`` route each metric to its partition's queue,
as the gateway does, so one turokd writes it (``turok_core.wire.partitions``); ``load_config``,
``TurokConfig`` and ``load_schemas`` read the configuration and schemas
(``turok_core.model``). turokd also accepts bodies in the design's plain JSON form on any
partition's queue, for producers that do not use this library (a metric sent to another
partition's queue is stored all the same, merged with what its own partition's turokd writes).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from turok_core.model.config import TurokConfig, load_config
    from turok_core.model.message import TurokMessage
    from turok_core.model.schemas import load_schemas
    from turok_core.runtime.aws import make_client
    from turok_core.windows.buffer import WindowBatch, WindowBuffer
    from turok_core.wire.codec import decode_body, encode_messages
    from turok_core.wire.partitions import partition_of, partition_queue_name, split_by_partition
    from turok_core.wire.queues import MessageQueue

# public name -> the module that defines it; imported on first access (boto3 and msgpack are
# not needed by every process that imports a turok_core module, e.g. a twistd plugin's config)
_FACE = {
    "TurokConfig": "turok_core.model.config",
    "load_config": "turok_core.model.config",
    "load_schemas": "turok_core.model.schemas",
    "TurokMessage": "turok_core.model.message",
    "WindowBuffer": "turok_core.windows.buffer",
    "WindowBatch": "turok_core.windows.buffer",
    "encode_messages": "turok_core.wire.codec",
    "decode_body": "turok_core.wire.codec",
    "MessageQueue": "turok_core.wire.queues",
    "make_client": "turok_core.runtime.aws",
    "partition_of": "turok_core.wire.partitions",
    "partition_queue_name": "turok_core.wire.partitions",
    "split_by_partition": "turok_core.wire.partitions",
}

__all__ = ["MessageQueue", "TurokConfig", "TurokMessage", "WindowBatch", "WindowBuffer", "decode_body",
           "encode_messages", "load_config", "load_schemas", "make_client", "partition_of", "partition_queue_name",
           "split_by_partition"]


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'turok_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))
