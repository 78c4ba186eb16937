"""turokd as a real twistd process against the moto server.

Needs the project installed in the virtualenv (``make install``) so twistd finds its plugin.
"""
from __future__ import annotations

import calendar
import re
import signal

import pytest

from tests.conftest import running_twistd, wait_for
from tests.support.fakes import ImmediatePool
from tests.support.queues import OutageQueue, QueueReader
from turok_core.model.message import TurokMessage
from turok_core.runtime.aws import make_client
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.tables import BlockStore
from turok_core.wire.announcements import decode_announcement
from turok_core.wire.codec import encode_messages
from turok_core.wire.memory_queue import MemoryQueue
from turok_core.wire.queues import MessageQueue

DAY = calendar.timegm((2014, 4, 1, 0, 0, 0))


@pytest.fixture
def turokd(turok_config, tmp_path):
    # past data is written 0.5 s after its last slot came, looked for 4 times a second: each
    # check of what turokd stored waits ~1 s, not ~3
    config = turok_config.replace(turokd_pollers=2, receive_wait_seconds=1, visibility_timeout_seconds=30,
                                  aws_threads=4, late_merge_delay_seconds=0.5, block_tick_seconds=0.25)
    with running_twistd("turokd", config, tmp_path, lambda log: "poller(s) on queue" in log.read_text(),
                        "turokd start", timeout=15) as (logfile, process):
        yield config, logfile, process


def ticking_clock():
    """A clock jumping an hour per reading, so no cached table knowledge outlives one call."""
    now = [0.0]

    def clock():
        now[0] += 3600.0
        return now[0]
    return clock


def queue_depth(config, name):
    sqs = make_client("sqs", config)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def take_announcements(index_queue, wait_seconds=1):
    """Every name in the announcements waiting on the index queue (deleting them)."""
    names = []
    messages = index_queue.receive(wait_seconds=wait_seconds)
    for message in messages:
        names.extend(decode_announcement(message.body))
    if messages:
        index_queue.delete([m.receipt_handle for m in messages])
    return names


def scan(config, table):
    client = make_client("dynamodb", config)
    return sorted((i for i in client.scan(TableName=table, ConsistentRead=True)["Items"]
                   if i["metric"]["S"] != RECORD_METRIC), key=lambda i: (i["metric"]["S"], i["start_time"]["N"]))


def test_turokd_stores_announces_once_and_is_idempotent(turokd):
    config, logfile, process = turokd
    sqs = make_client("sqs", config)
    queue = MessageQueue(sqs, config.queue_name)
    index_queue = MessageQueue(sqs, config.index_queue_name)
    # a store believes a missing table missing for a while: tables turokd makes must be seen at once
    store = BlockStore(make_client("dynamodb", config), config, clock=ticking_clock())
    names = [f"servers.web{i}.cpu" for i in range(6)]

    # a batch spread over several SQS messages: window averages, sums and a 1-minute series
    first = [TurokMessage(name, DAY + 10 * k, [i, k, 3 * k], 10, "average")
             for i, name in enumerate(names) for k in range(5)]
    # (at a minute the 10 s slots do not cover: those are rolled up into their own minute)
    first.append(TurokMessage(names[0], DAY + 120, [1, 2, 3, 4], 60, "sum"))
    bodies = encode_messages(first, max_body_bytes=200)  # v2 bodies are smaller: 250 fits 2
    assert len(bodies) >= 3
    queue.send(bodies)
    expected = {name: [(i + k + 3 * k) / 3 for k in range(5)] + [None] for i, name in enumerate(names)}
    wait_for(lambda: store.fetch_series(names, 10, DAY, DAY + 60) == expected, 20, "first batch in DynamoDB")
    wait_for(lambda: store.fetch_series([names[0]], 60, DAY + 120, DAY + 180) == {names[0]: [10]}, 10,
             "1-minute slot")
    # the 10 s slots rolled up into 1 minute (5 of 6 known ≥ xFilesFactor 0.5), not into the hour
    # (1 minute of 60 known < 0.5)
    minute = sum(expected[names[1]][:5]) / 5
    wait_for(lambda: store.fetch_series([names[1]], 60, DAY, DAY + 60) == {names[1]: [minute]}, 10, "rollup")
    assert store.fetch_series([names[1]], 3600, DAY, DAY + 3600) == {names[1]: [None]}

    announced = []
    wait_for(lambda: announced.extend(take_announcements(index_queue)) or set(announced) == set(names), 15,
             "announcement of the first names")
    assert sorted(announced) == sorted(names)  # each name once

    # more data for the same names plus one new name: only the new name is announced
    second = [TurokMessage(name, DAY + 50, [100 + i], 10, "last") for i, name in enumerate(names)]
    second.append(TurokMessage("servers.new.cpu", DAY + 50, [5], 10, "sum"))
    queue.send(encode_messages(second))
    wait_for(lambda: store.fetch_series(names + ["servers.new.cpu"], 10, DAY + 50, DAY + 60) == {
        **{name: [100 + i] for i, name in enumerate(names)}, "servers.new.cpu": [5]}, 20, "second batch")
    again = []
    wait_for(lambda: again.extend(take_announcements(index_queue)) or again, 15, "announcement of the new name")
    assert again == ["servers.new.cpu"]

    # the very same SQS body once more: consumed, and the table stays byte-identical
    table = store.table_for(DAY, 10)
    wait_for(lambda: queue_depth(config, config.queue_name) == 0, 15, "metrics queue drained")
    before = scan(config, table)
    queue.send([bodies[0]])
    wait_for(lambda: queue_depth(config, config.queue_name) == 0, 15, "redelivered body consumed")
    assert scan(config, table) == before

    # garbage is logged with its reason and left on the queue; turokd goes on working
    queue.send(["this is no turok body"])
    wait_for(lambda: "rejected message" in logfile.read_text(), 15, "rejection logged")
    assert "neither JSON nor base64" in logfile.read_text()
    queue.send(encode_messages([TurokMessage(names[1], DAY + 600, [42], 10, "maximum")]))
    wait_for(lambda: store.fetch_series([names[1]], 10, DAY + 600, DAY + 610) == {names[1]: [42]}, 20,
             "data after the garbage body")
    assert queue_depth(config, config.queue_name) == 1  # only the rejected body, in flight
    assert take_announcements(index_queue, wait_seconds=2) == []  # known names: no announcement
    assert process.poll() is None

    process.send_signal(signal.SIGTERM)
    process.wait(15)
    text = logfile.read_text()
    assert process.returncode in (0, -signal.SIGTERM) and "Main loop terminated" in text
    assert "turokd counters" in text and "'names_announced': 7" in text  # each name once
    assert "'bodies_rejected': 1" in text and "'errors': 0" in text
    # the replayed body left its base block and the blocks of its rollups unchanged
    assert int(re.search(r"'items_unchanged': (\d+)", text).group(1)) >= 2
    assert int(re.search(r"'rollup_slots_written': (\d+)", text).group(1)) >= 6
    assert "Traceback" not in text


def test_poll_loop_survives_failures_and_retries_announcements(turok_config, monkeypatch):
    """In process, on a fake clock: a failing receive and a failing announcement do not stop the loop."""
    from twisted.internet import defer
    from twisted.logger import globalLogPublisher

    from turok_core.runtime import consumer as consumer_module
    from turok_core.turokd import service as turokd_module
    from turok_core.wire.queues import ReceivedMessage

    # the AWS thread pool, run inline: the fakes below never block
    monkeypatch.setattr(consumer_module, "start_aws_threadpool", lambda reactor, size, name: ImmediatePool())
    monkeypatch.setattr(consumer_module, "deferToThreadPool",
                        lambda reactor, pool, f, *a, **kw: defer.maybeDeferred(f, *a, **kw))
    from twisted.internet.testing import MemoryReactorClock

    clock = MemoryReactorClock()
    # turokd's clock stands still here: late data for a written block is merged at the next tick
    # only without the coalescing delay (test_open_blocks.py tests the delay)
    config = turok_config.replace(turokd_pollers=1, late_merge_delay_seconds=0)
    body = encode_messages([TurokMessage("loop.m", DAY, [3], 10, "sum")])[0]
    service = None

    class FakeQueue:
        def __init__(self):
            self.calls, self.deleted = 0, []

        def receive(self, *args):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("receive failed")
            if self.calls in (2, 3):
                return [ReceivedMessage(body, f"h{self.calls}", f"m{self.calls}", 1)]
            service.running = False  # end the loop
            return []

        def delete(self, handles):
            self.deleted.extend(handles)

    queue, index_queue = FakeQueue(), OutageQueue()
    index_queue.failing = True  # the first announcement fails
    store = BlockStore(make_client("dynamodb", config), config)
    # the data is from 2014: its blocks are closed, so each tick writes what the polls held
    service = turokd_module.TurokdService(config, reactor=clock, store=store, queue=queue, index_queue=index_queue,
                                          clock=lambda: DAY + 86400)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.startService()
        assert queue.calls == 1 and service.counters.errors == 1  # waiting out the backoff
        clock.advance(1.0)
        assert len(index_queue) == 0 and service.counters.errors == 2  # held, announcement failed
        index_queue.failing = False
        clock.advance(1.0)  # the tick wrote the block and deleted the message
        assert queue.deleted == ["h2"]
        clock.advance(2.0)  # next round: the same name again, its announcement retried
        assert [decode_announcement(b) for b in QueueReader(index_queue).poll()] == [["loop.m"]]
        clock.advance(1.0)
        assert queue.deleted == ["h2", "h3"]
        assert queue.calls == 4 and service.counters.names_announced == 1
        clock.advance(60)
        done = service.stopService()
        assert done.called
    finally:
        globalLogPublisher.removeObserver(events.append)
    errors = [e for e in events if e.get("log_namespace") == "turok.turokd" and e.get("log_level").name == "error"]
    # the second failure came within the rate limit's interval: counted, not logged
    assert len(errors) == 1 and "receive failed" in repr(errors[0].get("error"))
    assert store.fetch_series(["loop.m"], 10, DAY, DAY + 10) == {"loop.m": [3]}


@pytest.mark.processes
def test_poison_message_goes_to_the_dead_letter_queue_and_never_blocks_the_queue(turok_config, tmp_path):
    """An undecodable body is logged with its reason, left undeleted, and moved by SQS's redrive
    policy to the dead-letter queue after ``dead_letter_max_receives``; good bodies keep flowing."""
    from turok_core.runtime.provision import provision

    config = turok_config.replace(queue_name=turok_config.queue_name + "-poison",
                                  dead_letter_queue_name=turok_config.dead_letter_queue_name + "-poison",
                                  dead_letter_max_receives=2, visibility_timeout_seconds=1,
                                  receive_wait_seconds=1, turokd_pollers=1, late_merge_delay_seconds=0.5,
                                  block_tick_seconds=0.25)
    provision(config)
    sqs = make_client("sqs", config)
    queue = MessageQueue(sqs, config.queue_name)
    dead_letters = MessageQueue(sqs, config.dead_letter_queue_name)
    store = BlockStore(make_client("dynamodb", config), config, clock=ticking_clock())
    with running_twistd("turokd", config, tmp_path, lambda log: "poller(s) on queue" in log.read_text(),
                        "turokd start", timeout=15) as (logfile, process):
        queue.send(["this is no turok body"])
        for minute in range(3):  # good messages before, during and after the poison's retries
            queue.send(encode_messages([TurokMessage("poison.neighbour", DAY + 60 * minute, [minute], 10, "sum")]))
            wait_for(lambda: store.fetch_series(["poison.neighbour"], 10, DAY + 60 * minute,
                                                DAY + 60 * minute + 10)["poison.neighbour"] == [minute],
                     20, f"good message {minute} stored next to the poison")
        moved = wait_for(lambda: dead_letters.receive(10, 1), 30, "the poison in the dead-letter queue")
        assert [m.body for m in moved] == ["this is no turok body"]
        assert "body is neither JSON nor base64" in logfile.read_text()
        assert process.poll() is None


def test_turokd_stops_receiving_while_it_holds_max_held_messages(turok_config, monkeypatch):
    """Blocks that cannot be written keep their messages held; past the bound the pollers wait
    instead of receiving more, and receive again once a tick has written and deleted them."""
    from twisted.internet import defer
    from twisted.internet.testing import MemoryReactorClock

    from turok_core.runtime import consumer as consumer_module
    from turok_core.turokd import service as turokd_module
    from turok_core.wire.queues import ReceivedMessage

    monkeypatch.setattr(consumer_module, "start_aws_threadpool", lambda reactor, size, name: ImmediatePool())
    monkeypatch.setattr(consumer_module, "deferToThreadPool",
                        lambda reactor, pool, f, *a, **kw: defer.maybeDeferred(f, *a, **kw))
    clock = MemoryReactorClock()
    config = turok_config.replace(turokd_pollers=1, max_held_messages=2, receive_wait_seconds=0,
                                  visibility_timeout_seconds=4, late_merge_delay_seconds=0)

    class Queue:
        def __init__(self):
            self.calls, self.deleted, self.extended = 0, [], []

        def receive(self, *args):
            self.calls += 1
            body = encode_messages([TurokMessage(f"held.m{self.calls}", DAY, [1], 10, "sum")])[0]
            return [ReceivedMessage(body, f"h{self.calls}", f"m{self.calls}", 1)]

        def delete(self, handles):
            self.deleted.extend(handles)

        def change_visibility(self, entries):
            self.extended.extend(entries)

    class DownStore(MemoryBlockStore):  # DynamoDB down
        def write_blocks(self, blocks, assume_new=True, exclusive=False, fill_gaps=False, merged=None):
            raise RuntimeError("DynamoDB unreachable")

        def put_blocks(self, blocks):
            raise RuntimeError("DynamoDB unreachable")

    queue = Queue()
    service = turokd_module.TurokdService(config, reactor=clock, store=DownStore(config), queue=queue,
                                          index_queue=MemoryQueue(), clock=lambda: DAY + 86400 + clock.seconds())
    service.startService()
    try:
        for _ in range(10):
            clock.advance(1.0)
        assert queue.calls == 2 and service.writer.open.held_messages == 2  # held, then waiting
        assert service.counters.receive_pauses >= 5 and service.counters.errors >= 5 and queue.deleted == []
        # their blocks are due but cannot be written: the held messages are kept invisible, not
        # left to be received again (and counted toward the dead-letter queue): each renewed, at
        # least a visibility timeout at a time, more than once in these 10 s
        renewed = [handle for handle, seconds in queue.extended if seconds >= config.visibility_timeout_seconds]
        assert set(renewed) == {"h1", "h2"} and min(map(renewed.count, ("h1", "h2"))) >= 2
        service.writer.store = BlockStore(make_client("dynamodb", config), config)  # DynamoDB is back
        clock.advance(1.0)
        clock.advance(1.0)
        assert queue.deleted[:2] == ["h1", "h2"] and queue.calls > 2
    finally:
        service.running = False
        clock.advance(5)


def test_sigterm_writes_the_open_blocks_and_deletes_their_messages(turokd):
    """Graceful shutdown: blocks still open (current data, 72-minute blocks) are written and their
    SQS messages deleted before turokd exits, so nothing waits for a redelivery."""
    config, logfile, process = turokd
    store, names, slot = _send_held(config, "shutdown", 5)
    assert store.fetch_series(names, 10, slot, slot + 10) == {name: [None] for name in names}  # still open
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    assert process.returncode in (0, -signal.SIGTERM)
    assert "wrote 5 open block(s) at shutdown" in logfile.read_text()
    assert store.fetch_series(names, 10, slot, slot + 10) == {name: [i + 1.0] for i, name in enumerate(names)}
    assert queue_depth(config, config.queue_name) == 0


def test_sigterm_during_long_polls_longer_than_a_lease_still_writes_the_open_blocks(turok_config, tmp_path):
    """Stopping waits for the pollers' long polls (10 s here), longer than a lease (4 s): the
    leases are renewed meanwhile, so the partition is still provably held when its blocks are
    written (before, it was dropped unwritten and its pending coarse blocks with it)."""
    import time

    config = turok_config.replace(receive_wait_seconds=10, lease_duration_seconds=4, lease_heartbeat_seconds=1,
                                  lease_write_margin_seconds=2, visibility_timeout_seconds=60)
    with running_twistd("turokd", config, tmp_path, lambda log: "poller(s) on queue" in log.read_text(),
                        "turokd start", timeout=15) as (logfile, process):
        store, names, slot = _send_held(config, "longpoll", 3)
        time.sleep(1.5)  # the pollers are in their next long poll
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    log = logfile.read_text()
    assert "not provably held" not in log, log[-2000:]
    assert "wrote 3 open block(s) at shutdown" in log
    assert store.fetch_series(names, 10, slot, slot + 10) == {name: [i + 1.0] for i, name in enumerate(names)}
    assert queue_depth(config, config.queue_name) == 0


def _send_held(config, prefix: str, count: int):
    """One body of ``count`` sum metrics stamped now, held by the running turokd; (store, names, slot)."""
    import time

    queue = MessageQueue(make_client("sqs", config), config.queue_name)
    store = BlockStore(make_client("dynamodb", config), config, clock=ticking_clock())
    now = int(time.time())
    slot = now - now % 10
    names = [f"{prefix}.m{i}" for i in range(count)]
    queue.send(encode_messages([TurokMessage(name, slot, [i + 1.0], 10, "sum") for i, name in enumerate(names)]))
    wait_for(lambda: _not_visible(config) == 1, 20, "turokd to hold the message")
    return store, names, slot


def _not_visible(config) -> int:
    sqs = make_client("sqs", config)
    url = sqs.get_queue_url(QueueName=config.queue_name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"])
