"""The index store's contract, run against every store: in memory, and IndexStore on S3 (moto).

``index_stores`` (tests/conftest.py) makes writers of one fresh index. What one store does, the
other must do too: where names go, what the stats count, that the first writer fixes the shard
count, and that compare-and-swap loses nothing when writers race.
"""
from __future__ import annotations

import threading
import time
from itertools import count
from typing import Callable, Optional

import pytest

from tests.support.index_shards import read_shard
from turok_core.index.shards import shard_of
from turok_core.index.store import IndexConflictError


def all_names(store) -> set[str]:
    return set().union(*(read_shard(store, shard)[0] for shard in range(store.shard_count())))


def interfere(store, intruder: Callable[[], object], times: Optional[int] = 1) -> list[int]:
    """Run ``intruder`` right after ``store`` reads a shard (``times`` times; None: always), so
    another writer changes the shard between the read and the write: the race compare-and-swap
    exists for. Returns a one-item list counting the interferences."""
    read, fired = store.read_object, [0]

    def read_object(shards: int, shard: int):
        result = read(shards, shard)
        if times is None or fired[0] < times:
            fired[0] += 1
            intruder()
        return result

    store.read_object = read_object  # the store's own compare-and-swap calls it
    return fired


def test_add_names_counts_and_places_every_name(index_stores):
    store = index_stores(shards=8)
    names = [f"host{i}.cpu.user" for i in range(40)] + ["a.b;k=v", "bad..name", ""]
    stats = store.add_names(names + names[:5])
    valid = set(names) - {"bad..name", ""}
    assert (stats.names, stats.added, stats.rejected) == (41, 41, 2)
    touched = {shard_of(n, 8) for n in valid}
    assert stats.shard_writes == len(touched) and stats.conflicts == 0
    for shard in range(8):
        shard_names, version = read_shard(store, shard)
        assert {shard_of(n, 8) for n in shard_names} <= {shard}
        assert (version is None) == (shard not in touched)
    assert all_names(store) == valid

    again = store.add_names(names[:10])  # nothing new: no write at all
    assert (again.added, again.shard_writes) == (0, 0) and again.shards_unchanged > 0


def test_a_shards_version_changes_with_each_write_only(index_stores):
    store = index_stores(shards=1)
    assert read_shard(store, 0) == (set(), None)
    store.add_names(["a.b"])
    names, first = read_shard(store, 0)
    assert names == {"a.b"} and first is not None
    store.add_names(["a.b"])
    assert read_shard(store, 0)[1] == first
    store.add_names(["c.d"])
    assert read_shard(store, 0)[1] not in (None, first)


def test_the_first_writers_shard_count_stays(index_stores):
    index_stores(shards=4).add_names(["a.b"])
    later = index_stores(shards=32)
    assert later.shard_count() == 4
    later.add_names(["c.d"])
    assert all_names(later) == {"a.b", "c.d"}
    assert "c.d" in read_shard(later, shard_of("c.d", 4))[0]


def test_remove_names_counts_and_keeps_the_rest(index_stores):
    store = index_stores(shards=4)
    store.add_names(["a.one", "a.two", "a.three"])
    stats = store.remove_names(["a.two", "not.there", "a.two"])
    separate = shard_of("not.there", 4) != shard_of("a.two", 4)
    assert (stats.names, stats.removed, stats.shard_writes, stats.conflicts) == (2, 1, 1, 0)
    assert stats.shards_unchanged == (1 if separate else 0)
    assert all_names(store) == {"a.one", "a.three"}
    again = store.remove_names(["a.two"])
    assert (again.removed, again.shard_writes, again.shards_unchanged) == (0, 0, 1)


def test_lost_race_is_retried_and_nothing_is_lost(index_stores):
    index_stores(shards=1).add_names(["seed.metric"])  # one shard: every writer contends
    other, racer = index_stores(shards=1), index_stores(shards=1)
    fired = interfere(racer, lambda: other.add_names(["intruder.metric"]))
    stats = racer.add_names(["mine.metric"])
    assert fired == [1] and stats.conflicts == 1 and stats.shard_writes == 1
    assert read_shard(index_stores(shards=1), 0)[0] == {"seed.metric", "intruder.metric", "mine.metric"}


def test_remove_names_keeps_a_name_added_concurrently(index_stores):
    index_stores(shards=1).add_names(["a.one", "a.two", "a.three"])
    other, racer = index_stores(shards=1), index_stores(shards=1)
    interfere(racer, lambda: other.add_names(["a.four"]))
    stats = racer.remove_names(["a.two", "not.there"])
    assert stats.removed == 1 and stats.conflicts == 1 and stats.shard_writes == 1
    assert read_shard(index_stores(shards=1), 0)[0] == {"a.one", "a.three", "a.four"}


def test_conflict_error_after_bounded_attempts(index_stores):
    index_stores(shards=1).add_names(["seed.metric"])
    other, racer = index_stores(shards=1), index_stores(shards=1, max_attempts=3)
    counter = count()
    fired = interfere(racer, lambda: other.add_names([f"other{next(counter)}.m"]), times=None)
    with pytest.raises(IndexConflictError, match="kept changing for 3 attempts"):
        racer.add_names(["x.y"])
    assert fired == [3] and "x.y" not in all_names(other)


def test_concurrent_writers_with_disjoint_names_all_land(index_stores):
    index_stores(shards=2).shard_count()  # the shard count first
    batches = {w: [f"writer{w}.metric{i}" for i in range(30)] for w in range(4)}
    results, errors = {}, []

    def write(worker):
        store = index_stores(shards=2, max_attempts=50, sleep=time.sleep)
        try:  # many small updates of the same two shards
            results[worker] = [store.add_names(batches[worker][i:i + 3]) for i in range(0, 30, 3)]
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(25)
    assert not errors and len(results) == 4
    assert sum(stats.added for runs in results.values() for stats in runs) == 120
    assert all_names(index_stores(shards=2)) == {n for names in batches.values() for n in names}


def counting(store, method: str) -> list[int]:
    """Count ``store``'s calls of its primitive ``method``; returns a one-item list."""
    original, calls = getattr(store, method), [0]

    def counted(*args):
        calls[0] += 1
        return original(*args)

    setattr(store, method, counted)
    return calls


def test_a_cold_writer_lists_the_layout_once_and_checks_the_manifest_once(index_stores):
    """A new index of 8 shards, every shard it writes new: no shard is read (the listing says none exists)
    and the manifest is read for the creations once, not once per shard."""
    store = index_stores(shards=8)
    store.shard_count()  # the manifest created and read
    reads, lists, manifests = (counting(store, name) for name in ("read_object", "list_versions", "_read_manifest"))
    names = [f"host{i}.cpu" for i in range(40)]
    stats = store.add_names(names)
    assert stats.shard_writes == len({shard_of(name, 8) for name in names}) > 1 and stats.conflicts == 0
    assert (reads, lists) == ([0], [1])
    assert manifests == [2]  # before the creations, and the call's closing revalidation
    assert all_names(index_stores(shards=8)) == set(names)


def test_a_writer_changes_the_shards_it_wrote_without_reading_them(index_stores):
    store = index_stores(shards=4)
    store.add_names([f"a.n{i}" for i in range(20)])
    reads, lists = counting(store, "read_object"), counting(store, "list_versions")
    stats = store.add_names([f"b.n{i}" for i in range(20)])
    assert (reads, lists) == ([0], [0]) and stats.shard_writes == 4 and stats.conflicts == 0
    assert all_names(index_stores(shards=4)) == {f"{p}.n{i}" for p in "ab" for i in range(20)}


def test_a_stale_copy_is_read_again_and_counts_no_lost_race(index_stores):
    store, other = index_stores(shards=1), index_stores(shards=1)
    store.add_names(["mine.one"])
    other.add_names(["theirs.one"])  # the shard changed after store's copy
    reads = counting(store, "read_object")
    stats = store.add_names(["mine.two"])
    assert reads == [1] and (stats.shard_writes, stats.conflicts, stats.added) == (1, 0, 1)
    assert all_names(other) == {"mine.one", "theirs.one", "mine.two"}


def test_a_copy_never_decides_that_a_name_is_there(index_stores):
    """Another writer (the keeper) removed a name after this writer's copy: announcing it again
    puts it back, though the copy holds it."""
    store, keeper = index_stores(shards=1), index_stores(shards=1)
    store.add_names(["a.b", "c.d"])
    keeper.remove_names(["a.b"])
    stats = store.add_names(["a.b"])
    assert (stats.added, stats.shard_writes) == (1, 1)
    assert all_names(keeper) == {"a.b", "c.d"}
    again = store.add_names(["a.b"])  # really there now: read, and nothing written
    assert (again.added, again.shard_writes, again.shards_unchanged) == (0, 0, 1)


def test_a_listed_version_confirms_a_copy(index_stores):
    """A writer with a copy of one shard and none of two others lists the layout: the copy whose
    version the listing shows decides like a read (a name it holds needs no write, and no read)."""
    def in_shard(shard: int, count_: int) -> list[str]:
        return [name for name in (f"n{i}.m" for i in range(400)) if shard_of(name, 8) == shard][:count_]

    store = index_stores(shards=8)
    store.add_names(in_shard(0, 3))
    reads, lists = counting(store, "read_object"), counting(store, "list_versions")
    stats = store.add_names(in_shard(0, 3)[:1] + in_shard(1, 2) + in_shard(2, 2))
    assert (reads, lists) == ([0], [1])
    assert (stats.added, stats.shard_writes, stats.shards_unchanged, stats.conflicts) == (4, 2, 1, 0)
    assert all_names(index_stores(shards=8)) == set(in_shard(0, 3) + in_shard(1, 2) + in_shard(2, 2))
