"""Partition routing: stable, spread, and one partition keeping today's queue names."""
from __future__ import annotations

import zlib

from turok_core.model.config import TurokConfig
from turok_core.wire.partitions import (
    partition_dead_letter_queue_name,
    partition_of,
    partition_queue_names,
    split_by_partition,
)


def test_partition_of_is_the_crc32_of_the_name_and_spreads_names():
    assert partition_of("a.b.c", 1) == 0
    assert partition_of("a.b.c", 4) == zlib.crc32(b"a.b.c") % 4  # the same in every process and release
    assert partition_of("été.b", 7) == zlib.crc32("été.b".encode()) % 7
    counts = [0] * 4
    for i in range(4000):
        counts[partition_of(f"servers.host{i}.cpu", 4)] += 1
    assert min(counts) > 800


def test_queue_names_keep_the_configured_name_with_one_partition():
    config = TurokConfig(queue_name="q", dead_letter_queue_name="d")
    assert partition_queue_names(config) == ["q"] and partition_dead_letter_queue_name(config, 0) == "d"
    four = config.replace(queue_partitions=4)
    assert partition_queue_names(four) == ["q-0", "q-1", "q-2", "q-3"]
    assert partition_dead_letter_queue_name(four, 2) == "d-2"


def test_split_by_partition_keeps_order_within_each_partition():
    names = [f"m{i}" for i in range(50)]
    groups = split_by_partition(list(range(50)), names, 3)
    assert sorted(i for group in groups.values() for i in group) == list(range(50))
    for partition, group in groups.items():
        assert group == sorted(group) and all(partition_of(names[i], 3) == partition for i in group)
    assert split_by_partition([1, 2], ["a", "b"], 1) == {0: [1, 2]}
