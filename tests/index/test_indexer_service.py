"""turok-indexer as a real twistd process against the moto server.

Needs the project installed in the virtualenv (``make install``) so twistd finds its plugin.
"""

import pytest

from tests.conftest import running_twistd, wait_for
from tests.support.index_shards import read_shard
from turok_core.index.s3_cache import IndexCache
from turok_core.index.s3_store import IndexStore
from turok_core.runtime.aws import make_client
from turok_core.wire.announcements import encode_announcements
from turok_core.wire.queues import MessageQueue


@pytest.fixture
def indexer(turok_config, tmp_path):
    config = turok_config.replace(index_shards=8, indexer_pollers=2, receive_wait_seconds=1,
                                  visibility_timeout_seconds=30)
    with running_twistd("turok-indexer", config, tmp_path, lambda log: "poller(s) on queue" in log.read_text(),
                        "indexer start", timeout=15) as (logfile, process):
        yield config, logfile, process


def queue_depth(config):
    sqs = make_client("sqs", config)
    url = sqs.get_queue_url(QueueName=config.index_queue_name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.moto
@pytest.mark.processes
def test_indexer_process_indexes_announced_names_and_survives_garbage(indexer):
    config, logfile, process = indexer
    queue = MessageQueue(make_client("sqs", config), config.index_queue_name)
    first = [f"servers.web{i}.cpu.user" for i in range(50)]
    queue.send(["this is not an announcement"] + encode_announcements(first, max_body_bytes=400))

    cache = IndexCache(make_client("s3", config), config.replace(index_refresh_seconds=0))
    wait_for(lambda: set(first) <= set(cache.names()), 20, "first names in the index")
    log_text = wait_for(lambda: "no announcement" in logfile.read_text() and logfile.read_text(), 10,
                        "bad message logged")
    assert "announcement is not JSON" in log_text
    assert process.poll() is None  # still running

    # more names, some already known: the indexer keeps going after the garbage body
    second = first[:10] + [f"apps.api{i}.requests" for i in range(20)]
    queue.send(encode_announcements(second))
    wait_for(lambda: {m.path for m in cache.match("apps.*.requests")} == {f"apps.api{i}.requests" for i in range(20)},
             20, "second names in the index")
    assert cache.names() == sorted(set(first) | set(second))
    assert IndexStore(make_client("s3", config), config).shard_count() == 8

    # the good messages were deleted; only the garbage one remains (for the dead-letter queue)
    wait_for(lambda: queue_depth(config) == 1, 15, "announcements deleted")

    process.terminate()
    process.wait(15)
    text = logfile.read_text()
    print(text)
    # a graceful stop: twistd re-raises SIGTERM after the reactor stopped, once the loops finished
    assert process.returncode in (0, -15) and "Main loop terminated" in text
    assert "turok-indexer counters" in text and "'names_added': 70" in text and "'bad_messages': 1" in text
    assert "Traceback" not in text


def test_messages_are_deleted_only_after_the_index_update_succeeded():
    """One poll round in-process, with the thread pool replaced by direct calls."""
    from twisted.internet import defer, task

    from turok_core.index.memory_store import MemoryIndexStore
    from turok_core.index.service import IndexerService
    from turok_core.index.store import IndexConflictError
    from turok_core.model.config import TurokConfig
    from turok_core.wire.memory_queue import MemoryQueue

    class Store(MemoryIndexStore):
        """The in-memory index, recording each add_names call; another writer changes the shard
        between this store's read and its write ``races`` more times."""

        def __init__(self):
            super().__init__(TurokConfig(index_shards=1, write_max_attempts=3), sleep=lambda _: None)
            self.other = MemoryIndexStore(TurokConfig(index_shards=1), self.index)
            self.races, self.batches, self.intruders = 3, [], 0  # first round: every attempt loses

        def add_names(self, names):
            self.batches.append(list(names))
            return super().add_names(names)

        def read_object(self, shards, shard):
            result = super().read_object(shards, shard)
            if self.races:
                self.races -= 1
                self.intruders += 1
                self.other.add_names([f"other{self.intruders}.metric"])
            return result

    bodies = encode_announcements(["a.b", "c.d"], max_body_bytes=30) + ["{not json"]
    now = [0.0]
    queue, store = MemoryQueue(clock=lambda: now[0]), Store()
    queue.send(bodies)
    service = IndexerService(TurokConfig(), reactor=task.Clock(), store=store, queue=queue)
    service._in_pool = lambda function, *args, **kwargs: defer.maybeDeferred(function, *args, **kwargs)

    failures = []
    service.poll_once()
    service.write_pending().addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(IndexConflictError)
    assert len(queue) == 3  # the index did not take them: SQS will deliver them again
    assert store.batches == [["a.b", "c.d"]]  # both announcements in one add_names call

    store.races = 2  # second round: two lost races, then the write lands
    now[0] += service.config.visibility_timeout_seconds  # redelivered
    service.poll_once()
    service.write_pending()
    now[0] += service.config.visibility_timeout_seconds
    assert [m.body for m in queue.receive(10, 0)] == ["{not json"]  # never the bad body deleted
    counters = service.counters
    assert (counters.bad_messages, counters.names_added, counters.shard_writes,
            counters.conflicts_retried) == (2, 2, 1, 2)


def test_tagged_names_go_to_the_tag_index_too():
    """One poll round in-process: every name in the name index, the tagged ones in the tag index."""
    from twisted.internet import defer, task

    from turok_core.index.memory_store import MemoryIndexStore
    from turok_core.index.service import IndexerService
    from turok_core.index.tag_index import TagIndex
    from turok_core.model.config import TurokConfig
    from turok_core.wire.memory_queue import MemoryQueue

    names = ["plain.metric", "disk.used;dc=eu;host=a", "disk.used;dc=us;host=b"]
    queue, store, tags = MemoryQueue(), MemoryIndexStore(), MemoryIndexStore(TurokConfig(index_shards=4))
    queue.send(encode_announcements(names))
    service = IndexerService(TurokConfig(), reactor=task.Clock(), store=store, queue=queue, tag_store=tags)
    service._in_pool = lambda function, *args, **kwargs: defer.maybeDeferred(function, *args, **kwargs)
    service.poll_once()
    service.write_pending()

    def stored(writer):
        return set().union(*(read_shard(writer, shard)[0] for shard in range(writer.shard_count())))

    assert stored(store) == set(names)
    assert stored(tags) == set(names[1:])
    assert TagIndex(stored(tags)).find_series(["dc=eu"]) == ["disk.used;dc=eu;host=a"]
    assert len(queue) == 0 and service.counters.tagged_added == 2


def test_the_indexer_moves_an_index_whose_shards_pass_the_target_and_finishes_a_move_left_half_done():
    """In-process rounds: the name index passes its target and moves to 4x the shards; a tag index
    move a mover left half done is finished by the next indexer's first round, with no message,
    and an old layout a mover left after its switch is deleted by the next indexer's."""
    from twisted.internet import defer, task

    from tests.support.index_moves import Stop, stopping_after, visible
    from turok_core.index.layout import Manifest
    from turok_core.index.memory_store import MemoryIndex, MemoryIndexStore
    from turok_core.index.reshard import move_shards
    from turok_core.index.service import IndexerService
    from turok_core.model.config import TurokConfig
    from turok_core.wire.memory_queue import MemoryQueue

    config = TurokConfig(index_shards=2, index_shard_target_names=10, tag_index_shard_target_names=0,
                         receive_wait_seconds=0)
    names = [f"host{i}.cpu" for i in range(30)] + [f"disk.used;host=h{i}" for i in range(6)]
    tag_index = MemoryIndex()
    tags = MemoryIndexStore(config, tag_index)
    tags.add_names(names[30:])
    with pytest.raises(Stop):
        move_shards(stopping_after(MemoryIndexStore(config, tag_index), 1), to=4)

    def indexer(queue, store):
        service = IndexerService(config, reactor=task.Clock(), store=store, queue=queue,
                                 tag_store=MemoryIndexStore(config, tag_index))
        service._in_pool = lambda function, *args, **kwargs: defer.maybeDeferred(function, *args, **kwargs)
        return service

    first = indexer(MemoryQueue(), MemoryIndexStore(config))
    first.poll_once()  # no message: only the check for moves left half done
    assert tags.manifest(fresh=True) == Manifest(4) and first.counters.moves == 1
    assert visible(tags) == set(names[30:])

    queue, store = MemoryQueue(), MemoryIndexStore(config)
    queue.send(encode_announcements(names))
    second = indexer(queue, store)
    second.poll_once()
    second.write_pending()
    assert store.manifest(fresh=True) == Manifest(8) and second.counters.moves == 1
    assert visible(store) == set(names) and len(queue) == 0
    assert tags.manifest(fresh=True) == Manifest(4)  # its target is 0: never moved by size

    tags.put_object(2, 0, {"x.y;k=v"}, 4, None)  # a retired layout a mover killed after its switch left
    third = indexer(MemoryQueue(), MemoryIndexStore(config))
    third.poll_once()
    assert tags.layouts() == [4] and third.counters.moves == 0 and visible(tags) == set(names[30:])
