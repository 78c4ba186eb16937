"""Metrics-queue partitions: which partition a metric belongs to, and the partition queues' names.

A metric's partition is a stable hash of its name (CRC-32 of its UTF-8 bytes, the same in every
process, release and machine) modulo ``config.queue_partitions``. Producers send a metric's windows
to its partition's queue, so the one turokd holding that partition's lease writes the metric.
With one partition the queues keep their configured names; with ``n > 1`` partition ``p``'s queue
is ``<queue_name>-<p>`` and its dead-letter queue ``<dead_letter_queue_name>-<p>``.
"""
from __future__ import annotations

import zlib
from typing import Sequence, TypeVar

from turok_core.model.config import TurokConfig

T = TypeVar("T")


def partition_of(name: str, partitions: int) -> int:
    """The partition (``0 … partitions - 1``) of metric ``name``."""
    if partitions <= 1:
        return 0
    return zlib.crc32(name.encode("utf-8")) % partitions


def partition_queue_name(config: TurokConfig, partition: int) -> str:
    """The metrics queue of ``partition``."""
    return config.queue_name if config.queue_partitions <= 1 else f"{config.queue_name}-{partition}"


def partition_dead_letter_queue_name(config: TurokConfig, partition: int) -> str:
    """The dead-letter queue of ``partition``'s queue."""
    name = config.dead_letter_queue_name
    return name if config.queue_partitions <= 1 else f"{name}-{partition}"


def partition_queue_names(config: TurokConfig) -> list[str]:
    """Every partition's metrics queue, in partition order."""
    return [partition_queue_name(config, p) for p in range(max(1, config.queue_partitions))]


def split_by_partition(items: Sequence[T], names: Sequence[str], partitions: int) -> dict[int, list[T]]:
    """``items`` grouped by the partition of the metric name at the same index, order kept."""
    if partitions <= 1:
        return {0: list(items)} if items else {}
    groups: dict[int, list[T]] = {}
    for item, name in zip(items, names):
        groups.setdefault(partition_of(name, partitions), []).append(item)
    return groups
