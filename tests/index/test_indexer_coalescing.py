"""The indexer's coalesced writes, in process: the names of many messages and receives go into
one write per index (one conditional write per touched shard), after ``index_coalesce_seconds``;
their messages are deleted only once both indexes hold them, never after a failed write.

Each test runs ``IndexerService`` on a ``task.Clock`` with the thread pool replaced by direct
calls (or by Deferreds the test fires), on the in-memory queue and index stores.
"""
from __future__ import annotations

from twisted.internet import defer, task

from tests.support.index_shards import read_shard
from turok_core.index.memory_store import MemoryIndexStore
from turok_core.index.service import IndexerService
from turok_core.index.shards import shard_of
from turok_core.model.config import TurokConfig
from turok_core.wire.announcements import encode_announcements
from turok_core.wire.memory_queue import MemoryQueue

CONFIG = TurokConfig(index_shards=8, receive_wait_seconds=0, index_coalesce_seconds=0.5)


class CountingStore(MemoryIndexStore):
    """The in-memory index, recording each add_names call and counting successful shard PUTs;
    ``fail`` makes the next add_names calls raise."""

    def __init__(self, config: TurokConfig = CONFIG) -> None:
        super().__init__(config, sleep=lambda _: None)
        self.calls: list[list[str]] = []
        self.puts = 0
        self.fail = 0

    def add_names(self, names):
        self.calls.append(list(names))
        if self.fail:
            self.fail -= 1
            raise RuntimeError("S3 is down")
        return super().add_names(names)

    def put_object(self, *args):
        written = super().put_object(*args)
        self.puts += bool(written)
        return written


def stored(store) -> set[str]:
    return set().union(*(read_shard(store, shard)[0] for shard in range(store.shard_count())))


def indexer(queue, store, tag_store=None, config=CONFIG):
    clock = task.Clock()
    service = IndexerService(config, reactor=clock, store=store, queue=queue,
                             tag_store=tag_store or CountingStore(config))
    service._in_pool = lambda function, *args, **kwargs: defer.maybeDeferred(function, *args, **kwargs)
    return service, clock


def announce(queue, names, per_body):
    for start in range(0, len(names), per_body):
        queue.send(encode_announcements(names[start:start + per_body]))


def test_many_messages_over_several_receives_make_one_write_per_touched_shard():
    names = [f"host{i}.cpu.user" for i in range(600)]
    queue, store = MemoryQueue(), CountingStore()
    announce(queue, names, 50)  # 12 bodies: two receives of 10 and 2
    service, clock = indexer(queue, store)
    service.poll_once()
    service.poll_once()
    assert service.counters.messages == 12 and store.calls == []  # the window is still open
    assert service.self_metrics_gauges()["pending_names"] == 600
    clock.advance(CONFIG.index_coalesce_seconds - 0.01)
    assert store.calls == [] and len(queue) == 12
    clock.advance(0.01)
    assert len(store.calls) == 1 and sorted(store.calls[0]) == sorted(names)
    assert store.puts == len({shard_of(name, 8) for name in names}) == 8  # each shard written once
    assert stored(store) == set(names) and len(queue) == 0
    counters = service.counters
    assert (counters.index_writes, counters.names_added, counters.shard_writes) == (1, 600, 8)


def test_a_failed_coalesced_write_leaves_every_message_of_it_undeleted():
    now = [0.0]
    names = [f"host{i}.disk;dc=eu" for i in range(40)]
    queue, store = MemoryQueue(clock=lambda: now[0]), CountingStore()
    announce(queue, names, 4)  # 10 bodies
    service, clock = indexer(queue, store)
    store.fail = 1
    service.poll_once()
    clock.advance(CONFIG.index_coalesce_seconds)
    assert len(store.calls) == 1 and service.counters.errors == 1
    assert len(queue) == 10  # none deleted: SQS delivers them all again

    # the name index takes them, the tag index fails: still none deleted
    tags = service.tag_store
    assert isinstance(tags, CountingStore)
    tags.fail = 1
    now[0] += CONFIG.visibility_timeout_seconds
    service.poll_once()
    clock.advance(CONFIG.index_coalesce_seconds)
    assert service.counters.errors == 2 and len(queue) == 10 and stored(store) == set(names)

    now[0] += CONFIG.visibility_timeout_seconds
    service.poll_once()
    clock.advance(CONFIG.index_coalesce_seconds)
    assert len(queue) == 0 and stored(tags) == set(names) and service.counters.index_writes == 1


def test_names_arriving_during_a_write_wait_for_the_next_one():
    queue, store = MemoryQueue(), CountingStore()
    service, clock = indexer(queue, store)
    in_flight: list[defer.Deferred] = []

    def in_pool(function, *args, **kwargs):
        if function == store.add_names:  # the name index's write: finished when the test says
            held: defer.Deferred = defer.Deferred()
            held.addCallback(lambda _: function(*args, **kwargs))
            in_flight.append(held)
            return held
        return defer.maybeDeferred(function, *args, **kwargs)

    service._in_pool = in_pool
    announce(queue, ["first.a", "first.b"], 1)
    service.poll_once()
    clock.advance(CONFIG.index_coalesce_seconds)
    assert len(in_flight) == 1  # the first write is under way
    announce(queue, ["second.a"], 1)
    announce(queue, ["second.b"], 1)
    service.poll_once()
    clock.advance(CONFIG.index_coalesce_seconds * 4)
    assert len(in_flight) == 1 and len(queue) == 4  # one write at a time
    in_flight[0].callback(None)
    assert len(queue) == 2  # the first write's messages only
    clock.advance(0)  # the second batch's window has passed: written at once
    assert len(in_flight) == 2
    in_flight[1].callback(None)
    assert store.calls == [["first.a", "first.b"], ["second.a", "second.b"]] and len(queue) == 0


def test_stopping_writes_what_is_pending():
    queue, store = MemoryQueue(), CountingStore()
    announce(queue, ["a.b", "c.d"], 1)
    service, clock = indexer(queue, store)
    service.poll_once()
    stopped = []
    service.stopService().addCallback(stopped.append)  # no loop runs: it goes straight to finish_work
    assert stopped and stored(store) == {"a.b", "c.d"} and len(queue) == 0
    assert clock.getDelayedCalls() == []  # the scheduled write was cancelled


def test_config_reads_the_window_from_file_and_environment(tmp_path):
    from turok_core.model.config import load_config

    path = tmp_path / "turok.conf"
    path.write_text("[turok]\nindex_coalesce_seconds = 2\n")
    assert load_config(str(path), environ={}).index_coalesce_seconds == 2.0
    assert load_config(str(path), environ={"TUROK_INDEX_COALESCE_SECONDS": "0"}).index_coalesce_seconds == 0.0
    assert TurokConfig().index_coalesce_seconds == 0.5
