"""Self-metrics: names, counter increases and gauges, and the two sinks (gateway windows, SQS)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger

from gateway.service import GatewayService
from tests.support.fakes import ImmediatePool, ImmediateReactor
from tests.support.queues import OutageQueue, QueueReader
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.parse.plaintext import parse_plaintext
from turok_core.runtime.aws import make_client
from turok_core.runtime.selfmetrics import SelfMetricsReporter, agent_name, flatten_counters, metric_prefix
from turok_core.runtime.selfmetrics_loop import QueueSelfMetricsSink, SelfMetricsLoop
from turok_core.wire.codec import decode_body
from turok_core.wire.memory_queue import MemoryQueue
from turok_core.wire.queues import MessageQueue, ReceivedMessage

T0 = 1_700_000_040  # a multiple of 60
log = Logger(namespace="turok.test")


def test_names_follow_carbon_agents_with_a_safe_host_node():
    config = TurokConfig()
    assert agent_name(config, "web-1.example.com") == "web-1_example_com"
    assert metric_prefix(config, "gateway", "web-1.example.com") == "turok.agents.web-1_example_com.gateway"
    assert metric_prefix(config.replace(agent_name="a b.c"), "turokd", "ignored") == "turok.agents.a_b_c.turokd"
    # the real host name, dots replaced
    import socket
    assert agent_name(config) == socket.gethostname().replace(".", "_")


@dataclass
class SampleCounters:
    received: int = 0
    errors: int = 0
    flag: bool = False  # not a number to report
    by_protocol: dict[str, int] = field(default_factory=dict)


def test_flatten_counters_expands_per_protocol_dicts():
    counters = SampleCounters(received=5, by_protocol={"plaintext_tcp": 3, "pick.le": 2})
    assert flatten_counters(counters) == {"received": 5, "errors": 0, "by_protocol.plaintext_tcp": 3,
                                          "by_protocol.pick_le": 2}


def test_counters_are_reported_per_interval_and_gauges_as_they_are():
    reporter = SelfMetricsReporter("turok.agents.h.gateway")
    names, values, stamps = reporter.report(T0 + 0.9, {"received": 5, "errors": 0}, {"open_windows": 7})
    assert names == ["turok.agents.h.gateway.received", "turok.agents.h.gateway.errors",
                     "turok.agents.h.gateway.open_windows"]
    assert values == [5.0, 0.0, 7.0] and stamps == [T0] * 3
    names, values, _ = reporter.report(T0 + 60, {"received": 12, "errors": 0, "new": 4}, {"open_windows": 2})
    assert dict(zip(names, values)) == {"turok.agents.h.gateway.received": 7.0, "turok.agents.h.gateway.errors": 0.0,
                                        "turok.agents.h.gateway.new": 4.0, "turok.agents.h.gateway.open_windows": 2.0}
    # a counter that went down (its source restarted) reports its value, never a negative increase
    _, values, _ = reporter.report(T0 + 120, {"received": 3}, {})
    assert values == [3.0]
    # nothing happened: zeros, so the series stays continuous
    _, values, _ = reporter.report(T0 + 180, {"received": 3}, {})
    assert values == [0.0]


def test_gateway_records_its_points_into_its_own_windows(tmp_path):
    reactor = ImmediateReactor()
    reactor.advance(T0)
    queue = MemoryQueue()
    sent = QueueReader(queue)
    config = TurokConfig(self_metrics_interval_seconds=60, agent_name="gw", window_grace_seconds=2,
                         spool_dir=str(tmp_path / "spool"))
    gateway = GatewayService(config, reactor=reactor, queue=queue, pool=ImmediatePool())
    gateway.startService()
    tcp, udp = gateway.sink("plaintext_tcp"), gateway.sink("plaintext_udp")
    tcp(parse_plaintext(b"a.b 1 %d\na.c 2 %d\nbad line\n" % (T0, T0), T0), "tcp 127.0.0.1:1")
    udp(parse_plaintext(b"a.b 3 %d\n" % T0, T0), "udp")
    gateway.accept(parse_plaintext(b"x.y 1 %d\n" % T0, T0), "pickle 127.0.0.1:2")  # protocol from the source
    assert gateway.counters.points_by_protocol == {"plaintext_tcp": 2, "plaintext_udp": 1, "pickle": 1}
    assert gateway.counters.bad_lines_by_protocol == {"plaintext_tcp": 1}
    # self-metrics recorded at T0 + 60 into the 60 s turok.agents schema; that window closes at
    # slot + step + grace = T0 + 122 and goes out with the next flush
    reactor.pump([1] * 121)
    assert not [m for m in sent.messages if m.metric.startswith("turok.agents.")]
    reactor.pump([1] * 2)
    mine = {m.metric: m for m in sent.messages if m.metric.startswith("turok.agents.gw.gateway.")}
    assert mine["turok.agents.gw.gateway.points_received"] == TurokMessage(
        "turok.agents.gw.gateway.points_received", T0 + 60, [4.0], 60, "average")
    assert mine["turok.agents.gw.gateway.points_by_protocol.plaintext_tcp"].datapoints == [2.0]
    assert mine["turok.agents.gw.gateway.points_by_protocol.plaintext_udp"].datapoints == [1.0]
    assert mine["turok.agents.gw.gateway.bad_lines"].datapoints == [1.0]
    assert mine["turok.agents.gw.gateway.bad_lines_by_protocol.plaintext_tcp"].datapoints == [1.0]
    # the user's three windows (10 s slot T0, grace 2) were sent at T0 + 12, before the report
    assert mine["turok.agents.gw.gateway.open_windows"].datapoints == [0.0]
    assert mine["turok.agents.gw.gateway.buffered_points"].datapoints == [0.0]
    assert mine["turok.agents.gw.gateway.messages_encoded"].datapoints == [3.0]
    assert mine["turok.agents.gw.gateway.bodies_sent"].datapoints == [1.0]
    assert mine["turok.agents.gw.gateway.send_errors"].datapoints == [0.0]
    assert mine["turok.agents.gw.gateway.cpu_seconds"].datapoints[0] >= 0
    assert mine["turok.agents.gw.gateway.memory_rss_bytes"].datapoints[0] > 1e6
    # the next interval reports increases only
    reactor.pump([1] * 60)
    later = [m for m in sent.messages if m.metric == "turok.agents.gw.gateway.points_received"]
    assert [m.datapoints for m in later] == [[4.0], [0.0]]
    assert [m.start_time for m in later] == [T0 + 60, T0 + 120]
    gateway.stopService()


def test_self_metrics_can_be_turned_off(tmp_path):
    reactor = ImmediateReactor()
    reactor.advance(T0)
    queue = MemoryQueue()
    gateway = GatewayService(TurokConfig(self_metrics_interval_seconds=0, spool_dir=str(tmp_path)),
                             reactor=reactor, queue=queue,
                             pool=ImmediatePool())
    gateway.startService()
    reactor.advance(200)
    assert len(queue) == 0
    gateway.stopService()


def test_queue_sink_sends_one_message_per_counter_and_slot_and_retries():
    reactor = ImmediateReactor()
    reactor.advance(T0)
    queue = OutageQueue()
    sent = QueueReader(queue)
    config = TurokConfig(self_metrics_interval_seconds=20, agent_name="h")
    sink = QueueSelfMetricsSink(config, lambda: queue, lambda f, *a: defer.maybeDeferred(f, *a), reactor.seconds, log)
    counters = {"received": 0}
    loop = SelfMetricsLoop(config, "turokd", lambda: (dict(counters), {"queue_lag_seconds": 1.5}), sink, reactor, log)
    loop.start()
    for _ in range(2):  # reports at T0 + 20 and T0 + 40, in the 60 s slot T0: nothing closed yet
        counters["received"] += 10
        reactor.advance(20)
    assert len(queue) == 0 and sink.buffer.open_windows > 0
    queue.failing = True
    counters["received"] += 5
    reactor.advance(20)  # T0 + 60: slot T0 closed, the send fails: kept for the next interval
    assert len(queue) == 0 and sink.messages_sent == 0
    queue.failing = False
    reactor.advance(20)
    assert sink.messages_sent > 0
    received = [m for m in sent.messages if m.metric == "turok.agents.h.turokd.received"]
    # the reports at T0+20 and T0+40 share the slot T0 (averaged by turokd, as the schema says)
    assert received == [TurokMessage("turok.agents.h.turokd.received", T0, [10.0, 10.0], 60, "average")]
    lag = [m for m in sent.messages if m.metric == "turok.agents.h.turokd.queue_lag_seconds"]
    assert lag[0].datapoints == [1.5, 1.5]
    loop.stop()


def test_consumer_reports_receive_lag_and_sends_to_the_metrics_queue(turok_config, monkeypatch):
    """turokd on a fake clock: its self-metrics reach config.queue_name as Turok messages."""
    from turok_core.runtime import consumer as consumer_module
    from turok_core.turokd.service import TurokdService

    monkeypatch.setattr(consumer_module, "start_aws_threadpool", lambda reactor, size, name: ImmediatePool())
    monkeypatch.setattr(consumer_module, "deferToThreadPool",
                        lambda reactor, pool, f, *a, **kw: defer.maybeDeferred(f, *a, **kw))
    clock = MemoryReactorClock()  # turokd also listens for cache queries
    clock.advance(T0)
    config = turok_config.replace(self_metrics_interval_seconds=60, agent_name="c1", turokd_pollers=1)

    class IdleQueue:
        def receive(self, *args):
            return defer.Deferred()  # a receive that never returns: the poll loop waits forever

    service = TurokdService(config, reactor=clock, store=object(), queue=IdleQueue(), index_queue=object())
    service.startService()
    service.counters.messages_received = 3
    # received now (T0), the oldest sent 30 s ago: lag 30 s
    service.note_received([ReceivedMessage("b", "h", "m", 1, T0 - 30.0), ReceivedMessage("b", "h", "m", 1, None),
                           ReceivedMessage("b", "h", "m", 1, T0 - 10.0)])
    clock.advance(60)   # report at T0 + 60
    clock.advance(60)   # its 60 s slot closed: sent
    service.running = False
    reader = MessageQueue(make_client("sqs", config), config.queue_name)
    got: dict[str, list[float]] = {}
    deadline = time.monotonic() + 10
    expected = {"turok.agents.c1.turokd.messages_received", "turok.agents.c1.turokd.queue_lag_seconds",
                "turok.agents.c1.turokd.errors"}
    while not expected <= set(got) and time.monotonic() < deadline:
        for message in reader.receive(10, 1):
            for m in decode_body(message.body):
                got[m.metric] = m.datapoints
                assert m.start_time == T0 + 60 and m.resolution == 60
            assert message.sent_timestamp is not None and abs(message.sent_timestamp - time.time()) < 60
    assert got["turok.agents.c1.turokd.messages_received"] == [3.0]
    assert got["turok.agents.c1.turokd.queue_lag_seconds"] == [30.0]
    assert got["turok.agents.c1.turokd.errors"] == [0.0]


def test_receive_lag_never_negative():
    from turok_core.index.service import IndexerService

    clock = Clock()
    clock.advance(T0)
    service = IndexerService(TurokConfig(), reactor=clock, store=object(), queue=object())
    service.note_received([ReceivedMessage("b", "h", "m", 1, T0 + 5.0)])  # a clock skewed ahead
    assert service.self_metrics_gauges() == {"queue_lag_seconds": 0.0, "pending_names": 0}
    service.note_received([ReceivedMessage("b", "h", "m", 1, T0 - 7.0), ReceivedMessage("b", "h", "m", 1, T0 - 2.0)])
    assert service.self_metrics_gauges()["queue_lag_seconds"] == 7.0
    assert service.self_metrics_gauges()["queue_lag_seconds"] == 0.0  # reset each interval
    assert service.agent_service == "indexer"


@pytest.mark.parametrize("broken", ["collect", "sink"])
def test_a_failing_snapshot_never_stops_the_loop(broken):
    clock = Clock()
    calls = []

    def collect():
        calls.append("collect")
        if broken == "collect" and len(calls) == 1:
            raise RuntimeError("boom")
        return {"n": len(calls)}, {}

    def sink(names, values, stamps):
        if broken == "sink" and len(calls) == 1:
            raise RuntimeError("boom")
        calls.append(dict(zip(names, values))["turok.agents.x.s.n"])

    loop = SelfMetricsLoop(TurokConfig(self_metrics_interval_seconds=5, agent_name="x"), "s", collect, sink, clock, log)
    loop.start()
    clock.advance(5)
    clock.advance(5)
    assert calls[-1] in (2.0, 1.0) and calls.count("collect") == 2
    loop.stop()


def test_settings_come_from_the_file_and_the_environment(tmp_path):
    from turok_core.model.config import load_config

    path = tmp_path / "turok.conf"
    path.write_text("[turok]\nself_metrics_interval_seconds = 15\nagent_name = box.one\n")
    config = load_config(str(path), environ={})
    assert (config.self_metrics_interval_seconds, config.agent_name) == (15.0, "box.one")
    assert metric_prefix(config, "gateway") == "turok.agents.box_one.gateway"
    config = load_config(str(path), environ={"TUROK_SELF_METRICS_INTERVAL_SECONDS": "0", "TUROK_AGENT_NAME": "b2"})
    assert (config.self_metrics_interval_seconds, config.agent_name) == (0.0, "b2")
    assert TurokConfig().self_metrics_interval_seconds == 60.0  # carbon's CARBON_METRIC_INTERVAL
