"""Moving an index to more shards while writers keep writing, run against every store (in memory,
and on S3 for the name and the tag index): nothing added is lost, nothing removed comes back,
whatever interleaves with the move, a move stopped half way is finished by the next mover, and
the seal is what makes it so (the same interleaving without it loses a name).
"""
from __future__ import annotations

import random
import threading
import time

import pytest

import turok_core.index.reshard as reshard_module
from tests.support.index_moves import Stop, jittered, stopping_after, stopping_at_the_switch, visible
from turok_core.index.layout import Manifest
from turok_core.index.reshard import move_due, move_shards
from turok_core.index.shards import shard_of
from turok_core.index.store import AddStats


def names_of(count: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}.host{i}.cpu" for i in range(count)] + [f"disk.{prefix}{i};dc=eu;host=h{i}" for i in range(count)]


def test_a_move_keeps_every_name_and_the_new_layout_takes_the_writes(index_stores):
    store = index_stores(shards=4)
    names = set(names_of(60))
    store.add_names(names)
    stats = move_shards(store, to=16)
    assert (stats.moved_from, stats.moved_to, stats.sealed, stats.filled) == (4, 16, 4, 16)
    assert store.manifest(fresh=True) == Manifest(16) and store.shard_count() == 16
    assert store.layouts() == [16] and stats.deleted == 4  # the old layout is gone
    assert visible(store) == names
    for shard in range(16):
        assert {shard_of(name, 16) for name in store.read_object(16, shard).names} <= {shard}
    stale = index_stores(shards=4)  # a writer made before the move reads the new manifest
    stale.add_names(["late.name"])
    stale.remove_names(["m.host3.cpu"])
    assert visible(store) == names - {"m.host3.cpu"} | {"late.name"}
    assert "late.name" in store.read_object(16, shard_of("late.name", 16)).names
    again = move_shards(store, to=16)  # nothing to do
    assert (again.moved_from, again.sealed, again.filled, again.deleted) == (0, 0, 0, 0)


def test_a_move_must_multiply_the_shard_count(index_stores):
    store = index_stores(shards=4)
    store.add_names(["a.b"])
    with pytest.raises(ValueError, match="not a multiple"):
        move_shards(store, to=6)
    assert store.manifest(fresh=True) == Manifest(4)


def test_a_mover_stopped_half_way_is_finished_by_the_next_and_writes_meanwhile_land(index_stores):
    store = index_stores(shards=4)
    names = set(names_of(40))
    store.add_names(names)
    removed = {name for name in names if shard_of(name, 4) in (0, 3)}  # one sealed range, one open
    with pytest.raises(Stop):
        move_shards(stopping_after(index_stores(shards=4), 1 + 4 + 1), to=16)  # seal 0, its 4 new shards, seal 1
    assert store.manifest(fresh=True) == Manifest(4, 16)
    assert store.read_object(4, 1).sealed_to == 16 and store.read_object(4, 2).sealed_to is None
    assert store.read_object(16, 1).version is None  # shard 1 sealed, its new shards not yet made
    writer = index_stores(shards=4)
    added = set(names_of(10, prefix="new"))
    writer.add_names(added)
    writer.remove_names(removed)
    expected = names - removed | added
    assert visible(store) == expected  # readers, during the move
    stats = move_shards(index_stores(shards=4))  # joins the move in progress: no target needed
    assert (stats.moved_from, stats.moved_to) == (4, 16) and stats.sealed == 2
    assert store.manifest(fresh=True) == Manifest(16) and store.layouts() == [16]
    assert visible(store) == expected


def test_a_removal_in_a_sealed_range_before_its_new_shard_exists_stays_removed(index_stores):
    store = index_stores(shards=2)
    names = [f"a.n{i}" for i in range(30)]
    store.add_names(names)
    with pytest.raises(Stop):
        move_shards(stopping_after(index_stores(shards=2), 2), to=8)  # both old shards sealed, nothing filled
    gone = names[:5]
    index_stores(shards=2).remove_names(gone)  # creates each new shard from the sealed names, minus these
    assert visible(store) == set(names[5:])
    move_shards(index_stores(shards=2))  # the mover's copies find those shards made: nothing comes back
    assert visible(store) == set(names[5:])


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "seal-skipped"])
def test_a_writer_that_read_an_old_shard_before_the_move_is_fenced_by_the_seal(index_stores, monkeypatch, sealed):
    """The writer reads its old shard; then a mover seals and copies every shard (and stops
    before the switch); then the writer's compare-and-swap. With the seal it fails, re-reads and
    writes the new layout; with the seal skipped it succeeds in the old shard after the copy, and
    the name is lost once the manifest switches."""
    store = index_stores(shards=2)
    store.add_names([f"a.n{i}" for i in range(10)])
    if not sealed:
        monkeypatch.setattr(reshard_module, "_seal", lambda store, old, new, shard, stats, sleep:
                            store.read_object(old, shard).names)
    writer = index_stores(shards=2)
    writer.shard_count()  # its manifest: 2 shards, no move
    read, fired = writer.read_object, []

    def read_object(shards, shard):
        found = read(shards, shard)
        if not fired:
            fired.append(shards)
            with pytest.raises(Stop):  # everything but the switch
                move_shards(stopping_at_the_switch(index_stores(shards=2)), to=8)
        return found

    writer.read_object = read_object
    writer.add_names(["late.name"])
    move_shards(index_stores(shards=2))  # another mover switches
    assert fired == [2]
    assert ("late.name" in visible(store)) is sealed


@pytest.mark.parametrize("shards,to", [(2, 8)])
def test_concurrent_writers_and_movers_lose_nothing_and_resurrect_nothing(index_stores, shards, to):
    """Three writers, a remover and two movers at once (threads, each store pausing at random
    after its reads so they interleave)."""
    store = index_stores(shards=shards)
    base = [f"base.n{i}" for i in range(80)]
    store.add_names(base)
    doomed = set(base[::3])
    batches = {w: [f"w{w}.n{i}" for i in range(24)] for w in range(3)}
    errors: list[BaseException] = []

    def run(work):
        try:
            work()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def writer(number):
        own = jittered(index_stores(shards=shards, max_attempts=60, sleep=time.sleep), number)
        for i in range(0, 24, 4):
            own.add_names(batches[number][i:i + 4])

    def remover():
        own = jittered(index_stores(shards=shards, max_attempts=60, sleep=time.sleep), 10)
        for name in sorted(doomed):
            own.remove_names([name])

    def mover(seed):
        move_shards(jittered(index_stores(shards=shards, max_attempts=60, sleep=time.sleep), seed), to=to,
                    sleep=lambda s: time.sleep(s / 4))

    works = [lambda n=n: writer(n) for n in batches] + [remover, lambda: mover(11), lambda: mover(12)]
    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    random.Random(7).shuffle(threads)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert store.manifest(fresh=True) == Manifest(to)
    assert visible(store) == set(base) - doomed | {n for names in batches.values() for n in names}


def test_a_move_is_due_past_the_target_or_while_one_is_in_progress(index_stores):
    store = index_stores(shards=2)
    stats = store.add_names([f"a.n{i}" for i in range(40)])
    assert stats.mean_shard_names == 20
    assert move_due(store, stats, 25) is None and move_due(store, stats, 0) is None
    assert move_due(store, stats, 19) == 8
    with pytest.raises(Stop):
        move_shards(stopping_after(index_stores(shards=2), 1), to=4)
    assert move_due(index_stores(shards=2), AddStats(), 0) == 4


def test_writers_that_have_not_seen_the_move_write_the_new_layout(index_stores):
    """Writers whose manifest is from before the move, or from during it, write after the switch
    and the deletion of the old layout: their names land in the new layout, removals too."""
    store = index_stores(shards=2)
    names = {f"a.n{i}" for i in range(20)}
    store.add_names(names)
    before = index_stores(shards=2)
    before.shard_count()  # read before the move: 2 shards
    with pytest.raises(Stop):
        move_shards(stopping_after(index_stores(shards=2), 1), to=8)
    during = index_stores(shards=2)
    assert during.manifest() == Manifest(2, 8)  # read during the move
    move_shards(index_stores(shards=2))
    assert store.layouts() == [8]
    before.add_names(["b.one", "b.two"])
    before.remove_names(["a.n1"])
    during.add_names(["c.one", "c.two"])
    during.remove_names(["a.n2"])
    assert before.manifest() == during.manifest() == Manifest(8)
    assert store.layouts() == [8]  # each checked the manifest before creating an old shard: no stray
    assert visible(store) == names - {"a.n1", "a.n2"} | {"b.one", "b.two", "c.one", "c.two"}



def test_a_writer_whose_store_another_thread_moved_meanwhile_leaves_no_stray(index_stores):
    """An indexer's pollers share one store: one moves the index (and so refreshes the store's
    manifest) while another is writing with the manifest from before the move. The writer finds
    its old shard deleted; it must not take the store's refreshed manifest for the one its write
    used and create the old shard again (found by tests/e2e/test_index_moves.py: a stray object
    left in the old layout). The writer has copies of the shards it wrote: the move comes before
    its first read or, changing a shard from its copy, its first write."""
    store = index_stores(shards=2)
    store.add_names(["a.one", "a.two"])
    original, original_put, moves = store.read_object, store.put_object, []

    def move_first() -> None:
        if not moves:  # the other poller's move, between the writer's manifest and its first read
            moves.append(None)
            moves.append(move_shards(store, to=8))

    def read_object(shards, shard):
        move_first()
        return original(shards, shard)

    def put_object(*args):
        move_first()
        return original_put(*args)

    store.read_object = read_object
    store.put_object = put_object
    store.add_names(["b.one", "b.two"])
    assert moves[1].moved_to == 8 and store.manifest() == Manifest(8)
    assert store.layouts() == [8]
    assert visible(index_stores(shards=2)) == {"a.one", "a.two", "b.one", "b.two"}

def test_readers_see_exactly_the_names_at_every_step_of_a_move(index_stores):
    """The move taken one object write at a time; between two steps random adds and removals
    (by a writer that saw the move start and one whose manifest is from before it): what a
    reader sees equals the names written so far, at every step."""
    rnd = random.Random(14)
    store = index_stores(shards=2)
    model = {f"a.n{i}" for i in range(24)}
    store.add_names(model)
    stale = index_stores(shards=2)
    stale.shard_count()
    steps = 0
    while True:
        try:
            move_shards(stopping_after(index_stores(shards=2), 1), to=8)
            break
        except Stop:
            steps += 1
        for writer in (index_stores(shards=2), stale):
            added = {f"b.n{rnd.randrange(40)}" for _ in range(3)}
            removed = set(rnd.sample(sorted(model), 2))
            writer.add_names(added)
            writer.remove_names(removed)
            model = model - removed | added
        assert visible(store) == model, steps
        assert steps < 40
    # two seals at least; the new shards the writers made first are not the mover's to make
    assert 2 <= steps <= 2 + 8 and store.manifest(fresh=True) == Manifest(8) and visible(store) == model
