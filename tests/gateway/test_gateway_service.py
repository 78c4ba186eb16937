"""The real ``twistd turok-gateway`` process: plaintext over TCP and UDP in, Turok messages on SQS.

Needs the project installed in the virtualenv (``make install``) so twistd finds the plugin;
the code itself is imported from the checkout through PYTHONPATH.
"""
from __future__ import annotations

import ast
import re
import signal
import socket
import time

import pytest

from gateway.service import GatewayService
from tests.conftest import free_port, running_twistd, wait_for
from tests.support.fakes import ImmediatePool, ImmediateReactor
from tests.support.queues import SqsReader
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.parse.plaintext import parse_plaintext
from turok_core.runtime.aws import make_client
from turok_core.wire.codec import decode_body
from turok_core.wire.queues import MessageQueue, QueueSendError

T0 = 1_700_000_000
GRACE = 5


@pytest.fixture
def gateway(turok_config, tmp_path):
    """A running twistd turok-gateway; yields (process, tcp_port, udp_port, log_path)."""
    tcp_port, udp_port = free_port(), free_port()
    config = turok_config.replace(
        interface="127.0.0.1", plaintext_port=tcp_port, plaintext_udp_port=udp_port,
        pickle_port=free_port(), statsd_port=free_port(),  # not 2004/8125, which may be taken
        flush_interval_seconds=0.2, window_grace_seconds=GRACE, aws_threads=2)

    def listening(log_path):
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=1):
            return True

    with running_twistd("turok-gateway", config, tmp_path, listening, "the gateway's TCP port") as (log, process):
        yield process, tcp_port, udp_port, log


def assert_still_open(sock: socket.socket) -> None:
    sock.settimeout(0.3)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return
    raise AssertionError(f"the gateway closed the connection (recv gave {data!r})")


def test_gateway_end_to_end(gateway, turok_config):
    process, tcp_port, udp_port, log_path = gateway
    reader = SqsReader(turok_config)
    base = (int(time.time()) - 3600) // 60 * 60  # an hour ago, aligned to both 10 s and 60 s

    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as sock:
        sock.sendall(b"".join([
            b"web.latency 1.5 %d\n" % (base + 1),
            b"this is bad\n",
            b"web.latency 2.5 %d\r\n" % (base + 5),
            b"web.hits.count 3 %d\n" % (base + 2),
            b"web.latency nan %d\n" % (base + 3),
            b"\xff\xfe 1 %d\n" % base,
            b"web.hits.count 4 %d\n" % (base + 9),
            b"carbon.agents.a.cpu 7 %d\n" % (base + 30),
            b"web.latency 9 %d.75\n" % (base + 15),
        ]))
        # the report of these bad lines first, so the long line below is the example of the next
        # report (one example per report: on a busy machine both could fall into one period)
        wait_for(lambda: "malformed input line" in log_path.read_text(), 10, "the bad-line report")
        sock.sendall(b"web.partial 4")  # a line completed by the next send
        time.sleep(0.3)
        sock.sendall(b"2 %d\n" % (base + 4))
        sock.sendall(b"x" * 5000 + b"\n")  # longer than max_line_length
        time.sleep(0.3)
        assert_still_open(sock)
        sock.sendall(b"web.after 1 %d\n" % (base + 7))

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"udp.metric 1 %d\nudp.bad\nudp.metric 2 %d\nudp.last 3 %d"
                       % (base + 20, base + 21, base + 40), ("127.0.0.1", udp_port))

        expected = sorted([
            TurokMessage("carbon.agents.a.cpu", base, [7.0], 60, "average"),
            TurokMessage("udp.last", base + 40, [3.0], 10, "average"),
            TurokMessage("udp.metric", base + 20, [1.0, 2.0], 10, "average"),
            TurokMessage("web.after", base, [1.0], 10, "average"),
            TurokMessage("web.hits.count", base, [3.0, 4.0], 10, "sum"),
            TurokMessage("web.latency", base, [1.5, 2.5], 10, "average"),
            TurokMessage("web.latency", base + 10, [9.0], 10, "average"),
            TurokMessage("web.partial", base, [42.0], 10, "average"),
        ], key=lambda m: (m.metric, m.start_time))
        assert reader.wait_for_count(len(expected), 20) == expected

        assert_still_open(sock)
        wait_for(lambda: "malformed input line" in log_path.read_text(), 10, "the bad-line report")
        log_text = log_path.read_text()
        assert "this is bad" in log_text or "\\xff\\xfe" in log_text

        # points in windows that are still open go out when the gateway is stopped
        reader.messages.clear()
        now = int(time.time())
        sock.sendall(b"shutdown.exact 5 %d\nshutdown.minus 6 -1\n" % now)
        time.sleep(0.5)
        reader.poll()
        assert reader.messages == [], "the open windows were released before SIGTERM"
        process.send_signal(signal.SIGTERM)
        # twistd ends by re-raising the signal that stopped it
        assert process.wait(20) in (0, -signal.SIGTERM), process.stdout.read()
        after = int(time.time())

    got = reader.wait_for_count(2, 15)
    assert got[0] == TurokMessage("shutdown.exact", now - now % 10, [5.0], 10, "average")
    minus = got[1]
    assert (minus.metric, minus.datapoints, minus.resolution, minus.aggregation_type) == \
        ("shutdown.minus", [6.0], 10, "average")
    assert now - now % 10 <= minus.start_time <= after - after % 10
    assert len(got) == 2

    log_text = log_path.read_text()
    assert f"plaintext on 127.0.0.1 tcp/{tcp_port} udp/{udp_port}" in log_text
    assert turok_config.queue_name in log_text
    assert "shutting down, spooling 2 open window(s)" in log_text
    assert "over the 4096-byte line limit" in log_text
    stopped = re.search(r"turok-gateway: stopped; (\{.*\})", log_text)
    assert stopped, log_text
    counters = ast.literal_eval(stopped.group(1))
    assert counters["bad_lines"] == 4  # "this is bad", the non-UTF-8 path, the long line, udp.bad
    assert counters["nan_dropped"] == 1
    assert counters["points_received"] == 13
    assert counters["send_errors"] == 0


# --- GatewayService in-process: a deterministic clock, a synchronous "pool", real moto SQS ------

class FlakyClient:
    """A real boto3 SQS client whose SendMessageBatch fails while ``failing`` is set."""

    def __init__(self, client) -> None:
        self._client = client
        self.failing = False
        self.send_calls = 0

    def get_queue_url(self, **kwargs):
        return self._client.get_queue_url(**kwargs)

    def send_message_batch(self, **kwargs):
        self.send_calls += 1
        if self.failing:
            raise ConnectionError("injected SQS outage")
        return self._client.send_message_batch(**kwargs)


def in_process_gateway(config, spool_dir, **changes):
    reactor = ImmediateReactor()
    reactor.advance(T0)
    client = FlakyClient(make_client("sqs", config))
    queue = MessageQueue(client, config.queue_name, max_attempts=2, sleep=lambda seconds: None)
    gateway = GatewayService(config.replace(flush_interval_seconds=1.0, window_grace_seconds=2,
                                            spool_dir=str(spool_dir), **changes),
                             reactor=reactor, queue=queue, pool=ImmediatePool())
    gateway.startService()
    return gateway, reactor, client


def feed(gateway, reactor, data: bytes) -> None:
    gateway.accept(parse_plaintext(data, reactor.seconds()), "test")


def test_failed_sends_are_kept_and_retried(turok_config, tmp_path):
    gateway, reactor, client = in_process_gateway(turok_config, tmp_path)
    reader = SqsReader(turok_config)
    client.failing = True
    feed(gateway, reactor, b"a.b 1 %d\na.b 2 %d\n" % (T0 - 100, T0 - 95))
    reactor.advance(1.0)
    assert gateway.counters.send_errors == 1
    assert gateway.outbox.backlog_bodies == 1
    assert gateway.counters.bodies_sent == 0
    reactor.advance(1.0)  # still failing: the body stays queued, not duplicated
    assert (gateway.counters.send_errors, gateway.outbox.backlog_bodies) == (2, 1)

    client.failing = False
    feed(gateway, reactor, b"c.count 5 %d\n" % (T0 - 50))
    reactor.advance(1.0)
    assert gateway.outbox.backlog_bodies == 0
    assert gateway.counters.bodies_sent == 2
    got = reader.wait_for_count(2, 10)
    assert got == [TurokMessage("a.b", T0 - 100, [1.0, 2.0], 10, "average"),
                   TurokMessage("c.count", T0 - 50, [5.0], 10, "sum")]

    # an open window waits for its grace, then stopService sends whatever is still open
    reader.messages.clear()
    feed(gateway, reactor, b"open.one 7 %d\n" % int(reactor.seconds()))
    reactor.advance(1.0)
    assert gateway.buffer.open_windows == 1
    stopped = gateway.stopService()
    assert stopped.called  # everything ran synchronously
    assert gateway.buffer.open_windows == 0
    now = int(reactor.seconds()) - 1
    assert reader.wait_for_count(1, 10) == [TurokMessage("open.one", now - now % 10, [7.0], 10, "average")]


def test_spool_bound_pauses_tcp_drops_udp_and_recovers(turok_config, tmp_path):
    gateway, reactor, client = in_process_gateway(turok_config, tmp_path, spool_max_bytes=2000)
    paused = []

    class Transport:
        connected = True

        def pauseProducing(self):
            paused.append(True)

        def resumeProducing(self):
            paused.append(False)

    class Wrapper:
        transport = Transport()

    factory = gateway.backpressure.pausing(object())
    factory.protocols[Wrapper()] = 1
    client.failing = True
    for i in range(100):  # ~35 bytes journaled per line: over the bound
        feed(gateway, reactor, b"a.b%d %d %d\n" % (i, i, T0 - 100))
    assert gateway.backpressure.paused and paused == [True]
    udp = gateway.sink("plaintext_udp", droppable=True)
    udp(parse_plaintext(b"u.a 1 %d\nu.b 2 %d\n" % (T0, T0), T0), "udp")
    assert gateway.counters.points_dropped_overload == 2
    reactor.advance(1.0)  # released into the spool, not sent: still over the bound
    assert gateway.outbox.backlog_bodies == 1 and gateway.backpressure.paused
    assert gateway.self_metrics()[1]["spool_backlog_bodies"] == 1
    client.failing = False
    reactor.pump([1.0] * 3)  # the backoff passes, the body goes, the spool empties
    assert gateway.outbox.backlog_bodies == 0 and not gateway.backpressure.paused and paused == [True, False]
    assert gateway.counters.bodies_sent == 1
    gateway.stopService()


def test_restart_replays_open_windows_and_unsent_bodies_once(turok_config, tmp_path):
    gateway, reactor, client = in_process_gateway(turok_config, tmp_path)
    reader = SqsReader(turok_config)
    feed(gateway, reactor, b"x.count 1 %d\nx.count 2 %d\n" % (T0 - 100, T0 + 5))
    reactor.advance(1.0)  # the old window is released and sent; the current one stays open
    assert gateway.counters.bodies_sent == 1
    client.failing = True
    feed(gateway, reactor, b"x.count 3 %d\ny.count 4 %d\n" % (T0 + 5, T0 - 200))
    reactor.advance(1.0)  # y's window goes to the spool and fails to send
    assert gateway.outbox.backlog_bodies == 1
    # a crash: nothing flushed; the next process finds the spool as it is
    for part in (gateway.outbox.journal, gateway.outbox.spool):
        part.log.close()
    client.failing = False
    again, reactor2, _ = in_process_gateway(turok_config, tmp_path)
    assert again.counters.points_replayed == 2  # x.count's open window (1 delivered point skipped)
    assert again.counters.bodies_replayed == 1
    again.stopService()
    got = reader.wait_for_count(3, 10)
    assert got == [TurokMessage("x.count", T0 - 100, [1.0], 10, "sum"),
                   TurokMessage("x.count", T0, [2.0, 3.0], 10, "sum"),
                   TurokMessage("y.count", T0 - 200, [4.0], 10, "sum")]


def test_points_outside_retention_or_too_far_ahead_are_refused_as_bad_lines(turok_config, tmp_path):
    gateway, reactor, client = in_process_gateway(turok_config, tmp_path)
    now = int(reactor.seconds())
    oldest = now - gateway._longest_retention
    feed(gateway, reactor, b"ok.a 1 %d\nold.a 2 %d\nahead.a 3 %d\nok.b 4 %d\nold.b 5 1\n" % (
        now - 60, oldest - 10, now + turok_config.max_future_seconds + 10, now + 60))
    assert gateway.counters.points_received == 2
    assert gateway.counters.bad_lines == 3  # two before retention (one in 1970), one far ahead
    assert gateway.counters.bad_lines_by_protocol == {"test": 3}
    assert gateway.buffer.buffered_points == 2
    gateway.stopService()


class RefusingQueue:
    """Takes every body except those carrying a ``poison.*`` metric, which it refuses one by one
    (as SQS's per-entry failures do) while taking the others of the batch."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    @property
    def url(self) -> str:
        return "refusing"

    def send(self, bodies):
        refused = [b for b in bodies if any(m.metric.startswith("poison.") for m in decode_body(b))]
        self.sent.extend(b for b in bodies if b not in refused)
        if refused:
            raise QueueSendError("entries kept failing", refused)


def test_a_body_sqs_keeps_refusing_is_dropped_and_counted(tmp_path):
    reactor = ImmediateReactor()
    reactor.advance(T0)
    queue = RefusingQueue()
    gateway = GatewayService(TurokConfig(window_grace_seconds=2, self_metrics_interval_seconds=0,
                                         spool_dir=str(tmp_path)), reactor=reactor, queue=queue, pool=ImmediatePool())
    gateway.startService()
    feed(gateway, reactor, b"poison.a 1 %d\n" % (T0 - 100))
    for i in range(30):  # a good body every flush keeps company to the refused one
        feed(gateway, reactor, b"good.a %d %d\n" % (i, T0 - 90 + i * 10))
        reactor.advance(1.0)
        if gateway.counters.bodies_dropped:
            break
    assert gateway.counters.bodies_dropped == 1
    reactor.advance(10.0)
    assert gateway.outbox.backlog_bodies == 0
    assert not [m for b in queue.sent for m in decode_body(b) if m.metric.startswith("poison.")]
    gateway.stopService()


def test_a_failing_disk_keeps_the_bodies_in_memory_and_says_so(turok_config, tmp_path):
    gateway, reactor, client = in_process_gateway(turok_config, tmp_path)
    reader = SqsReader(turok_config)

    def disk_full(bodies):
        raise OSError(28, "No space left on device")
    gateway.outbox.spool.add = disk_full
    feed(gateway, reactor, b"disk.a 1 %d\n" % (T0 - 100))
    reactor.advance(1.0)
    assert gateway.counters.spool_errors == 1
    assert gateway.counters.bodies_sent == 1  # sent from memory
    assert reader.wait_for_count(1, 10) == [TurokMessage("disk.a", T0 - 100, [1.0], 10, "average")]
    gateway.stopService()


@pytest.mark.processes
def test_the_gateway_process_tunes_its_garbage_collector(tmp_path):
    """twistd's plugin calls ``tune_gc`` before making the gateway (a subprocess: it is process-wide)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("import gc\n"
              "from twisted_plugins.turok_gateway_plugin import gateway\n"
              "gateway.makeService({'config': None})\n"
              "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)\n")
    env = {"PATH": "/usr/bin:/bin", "TUROK_SPOOL_DIR": str(tmp_path / "spool"), "TUROK_GC_THRESHOLD": "12345"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["12345", "True"], out.stderr


def test_cache_queries_see_open_and_just_released_windows(turok_config, tmp_path):
    """The finder's cache query to the gateway: open windows aggregated as turokd will, released
    ones for ``gateway_recent_seconds`` (on their way through SQS), then forgotten."""
    gateway, reactor, _client = in_process_gateway(turok_config, tmp_path, gateway_recent_seconds=5)
    now = int(reactor.seconds())
    slot = now - now % 10
    feed(gateway, reactor, b"c.hits.count 2 %d\nc.hits.count 3 %d\nc.load 4 %d\nc.load 8 %d\n"
         % (slot, slot + 1, slot, slot + 2))
    assert gateway.recent.cached_points(["c.hits.count", "c.load", "nope"], slot - 60, slot + 60) == {
        "c.hits.count": {10: [[slot, 5.0]]}, "c.load": {10: [[slot, 6.0]]}}
    assert gateway.recent.cached_points(["c.load"], slot + 10, slot + 60) == {}
    reactor.advance(slot + 10 + 2 + 1 - reactor.seconds())  # the window closes and is released
    assert gateway.buffer.open_windows == 0 and gateway.counters.bodies_sent == 1
    assert gateway.recent.cached_points(["c.load"], slot - 60, slot + 60) == {"c.load": {10: [[slot, 6.0]]}}
    for _ in range(6):
        reactor.advance(1.0)
    assert gateway.recent.cached_points(["c.load"], slot - 60, slot + 60) == {}  # turokd has it by now
    assert gateway.recent.released == []
    gateway.stopService()


def test_each_window_goes_to_its_partitions_queue(turok_config, tmp_path):
    """With ``queue_partitions`` 3 the gateway makes one queue per partition and sends each
    metric's windows only to its own partition's queue."""
    from turok_core.runtime.provision import provision
    from turok_core.wire.partitions import partition_of, partition_queue_names

    config = turok_config.replace(queue_partitions=3, flush_interval_seconds=1.0, window_grace_seconds=2,
                                  spool_dir=str(tmp_path))
    provision(config)
    reactor = ImmediateReactor()
    reactor.advance(T0)
    gateway = GatewayService(config, reactor=reactor, pool=ImmediatePool())  # the outbox makes the queues
    gateway.startService()
    names = [f"parts.m{i}" for i in range(30)]
    feed(gateway, reactor, b"".join(b"%s %d %d\n" % (name.encode(), i, T0 - 100) for i, name in enumerate(names)))
    reactor.advance(1.0)
    gateway.stopService()
    sqs = make_client("sqs", config)
    seen: dict[int, list[str]] = {}
    for partition, name in enumerate(partition_queue_names(config)):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
            seen.setdefault(partition, []).extend(m.metric for m in decode_body(message["Body"]))
    assert sorted(seen) == [0, 1, 2] and sorted(sum(seen.values(), [])) == sorted(names)
    assert all(partition_of(metric, 3) == partition for partition, metrics in seen.items() for metric in metrics)


def test_old_points_are_windowed_at_the_archive_covering_their_age(turok_config, tmp_path):
    """The shipped schemas: ``10s:1d,1min:30d,1h:2y``, and ``carbon.*`` at ``60s:90d``."""
    gateway, reactor, _client = in_process_gateway(turok_config, tmp_path)
    now = int(reactor.seconds())
    feed(gateway, reactor, b"a.new 1 %d\na.days 2 %d\na.months 3 %d\ncarbon.old 4 %d\ncarbon.kept 5 %d\n" % (
        now - 60, now - 3 * 86400, now - 40 * 86400, now - 100 * 86400, now - 80 * 86400))
    assert gateway.counters.points_received == 4 and gateway.counters.points_expired == 1
    assert gateway.counters.bad_lines == 0
    steps = {message.metric: message.resolution for message in gateway.buffer.release_all()}
    assert steps == {"a.new": 10, "a.days": 60, "a.months": 3600, "carbon.kept": 60}
    gateway.stopService()
