"""turokd in process on a fake reactor with two partitions: it polls only the partitions it holds,
drops a partition unwritten once it cannot prove its lease, and gives one back (written first)
when another turokd appears."""
from __future__ import annotations

import calendar

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock

from tests.support.fakes import ImmediatePool
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.runtime import consumer as consumer_module
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.memory_leases import MemoryLeaseTable
from turok_core.turokd.service import TurokdService
from turok_core.wire.codec import encode_messages
from turok_core.wire.memory_queue import MemoryQueue
from turok_core.wire.partitions import partition_of

DAY = calendar.timegm((2014, 4, 1, 0, 0, 0))


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def immediate_pool(monkeypatch):
    monkeypatch.setattr(consumer_module, "start_aws_threadpool", lambda reactor, size, name: ImmediatePool())
    def in_pool(reactor, pool, function, *args, **kwargs):
        if getattr(function, "__name__", "") == "receive":  # a long poll: it takes time, as SQS's
            return task.deferLater(reactor, 0.5, function, *args, **kwargs)
        return defer.maybeDeferred(function, *args, **kwargs)
    monkeypatch.setattr(consumer_module, "deferToThreadPool", in_pool)


def metric_in(partition: int) -> str:
    return next(f"part.m{i}" for i in range(1000) if partition_of(f"part.m{i}", 2) == partition)


def running_turokd(tmp_path):
    config = TurokConfig(table_prefix="parts", queue_partitions=2, turokd_pollers=1, receive_wait_seconds=0,
                         lease_duration_seconds=20, lease_heartbeat_seconds=5, lease_write_margin_seconds=5,
                         cache_port=0, self_metrics_interval_seconds=0, block_close_delay_seconds=2)
    reactor, lease_clock = MemoryReactorClock(), FakeClock(1000.0)
    queues = {p: MemoryQueue(f"q{p}", clock=lease_clock) for p in range(2)}
    for partition, queue in queues.items():
        queue.send(encode_messages([TurokMessage(metric_in(partition), DAY, [partition + 1.0], 10, "sum")]))
    store, table = MemoryBlockStore(config), MemoryLeaseTable()
    # the data clock stays inside the block: nothing closes on its own
    service = TurokdService(config, reactor=reactor, store=store, queues=queues, index_queue=MemoryQueue(),
                            clock=lambda: DAY + 5, leases=table, lease_clock=lease_clock)
    service.startService()
    reactor.advance(0.6)  # each partition's poller received its message
    return service, reactor, lease_clock, queues, store, table


def stored(store, metric):
    return store.fetch_series([metric], 10, DAY, DAY + 10)[metric]


def test_a_partition_not_provably_held_is_dropped_unwritten_and_its_messages_shown_again(immediate_pool, tmp_path):
    service, reactor, lease_clock, queues, store, table = running_turokd(tmp_path)
    try:
        assert sorted(service.work) == [0, 1] and service.writer.open.held_messages == 1
        assert all(len(queue.receive(10, 0)) == 0 for queue in queues.values())  # held by turokd
        lease_clock.now += 16  # no heartbeat since: the lease is not valid 5 s ahead any more
        reactor.advance(1.0)  # the tick checks before writing
        assert service.work == {} and service.counters.leases_lost == 2
        assert stored(store, metric_in(0)) == [None] and stored(store, metric_in(1)) == [None]
        assert [len(queue.receive(10, 0)) for queue in queues.values()] == [1, 1]  # visible again at once
    finally:
        service.running = False
        reactor.advance(10)


def test_a_turokd_over_its_share_writes_a_partition_then_gives_it_back(immediate_pool, tmp_path):
    service, reactor, lease_clock, queues, store, table = running_turokd(tmp_path)
    try:
        table.announce("another", lease_clock.now + 60)  # a second turokd appears
        lease_clock.now += 5
        reactor.advance(5.0)  # a heartbeat: share 1, partition 1 goes back after its blocks are written
        reactor.advance(1.0)  # once its poller's receive in flight has returned
        assert sorted(service.work) == [0] and service.counters.leases_released == 1
        assert stored(store, metric_in(1)) == [2.0] and len(queues[1]) == 0  # written, then deleted
        assert stored(store, metric_in(0)) == [None]  # still open in partition 0
        view = table.read()
        assert view.leases[1].owner == "" and view.leases[0].owner == service.leases.worker
    finally:
        done = service.stopService()
        reactor.advance(10)
    assert done.called and stored(store, metric_in(0)) == [1.0]  # written at the stop
    assert table.read().leases[0].owner == "" and service.leases.worker not in table.read().workers
