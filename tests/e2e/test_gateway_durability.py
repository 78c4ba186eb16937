"""The gateway's promise under faults, with real processes: ``twistd turok-gateway`` against the
session's moto server, reached through a TCP proxy the test closes to make SQS unreachable.

Every point is a ``sum`` metric worth 1, so a slot's stored value is the number of its points:
a point counted twice or lost changes it. What reaches the queue is read straight from moto
(not through the proxy) and checked per (metric, slot): turokd sets a slot to a message's
aggregate, so identical repeats are harmless (counted as duplicates) and any differing message
for a slot, or a wrong value, is a failure. Each test prints its figures (``-s`` shows them) for
docs/reliability.md.
"""
from __future__ import annotations

import ast
import random
import re
import select
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from gateway.outbox import DRAIN_BACKOFF
from tests.conftest import free_port, running_twistd, wait_for, with_schema_files
from turok_core.runtime.aws import make_client
from turok_core.wire.codec import decode_body

STEP = 10
GRACE = 2
SCHEMAS = f"""
[durability]
pattern = ^durability\\.
retentions = {STEP}s:1d

[self]
pattern = ^turok\\.agents\\.
retentions = {STEP}s:1d

[default]
pattern = .*
retentions = 60s:1d
"""
AGGREGATION = """
[durability]
pattern = ^durability\\.
xFilesFactor = 0
aggregationMethod = sum
"""


class Proxy:
    """A TCP forwarder on a fixed loopback port in front of moto; ``close`` makes the endpoint
    unreachable (connections refused, open ones cut), ``open`` brings it back."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.1)
        self._server = server
        self._stop.clear()
        thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def _accept(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                for sock in (a, b):
                    if sock in self._sockets:
                        self._sockets.discard(sock)
                        sock.close()


class Sent:
    """What the test sent: the sum of the values sent per (metric, slot), and the point count."""

    def __init__(self) -> None:
        self.per_slot: Counter = Counter()
        self.total = 0

    def lines(self, metrics: list[str], stamp: int, values: list[int] | None = None) -> bytes:
        values = values or [1] * len(metrics)
        for metric, value in zip(metrics, values):
            self.per_slot[(metric, stamp - stamp % STEP)] += value
        self.total += len(metrics)
        return b"".join(b"%s %d %d\n" % (metric.encode(), value, stamp) for metric, value in zip(metrics, values))


class Queue:
    """Every Turok message that reached the queue, read from moto directly and deleted."""

    def __init__(self, config) -> None:
        self.client = make_client("sqs", config)
        self.url = self.client.get_queue_url(QueueName=config.queue_name)["QueueUrl"]
        self.values: dict[tuple[str, int], list[float]] = defaultdict(list)  # one entry per message

    def poll(self) -> None:
        for _ in range(50):
            response = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = response.get("Messages", [])
            if not messages:
                return
            for message in messages:
                for turok in decode_body(message["Body"]):
                    self.values[(turok.metric, turok.start_time)].append(sum(turok.datapoints))
                self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def stored(self, prefix: str = "durability.") -> dict[tuple[str, int], float]:
        """The value turokd ends with for each slot: the last message's (all must agree)."""
        return {key: values[-1] for key, values in self.values.items() if key[0].startswith(prefix)}

    def wait_for(self, sent: Sent, timeout: float) -> None:
        def complete():
            self.poll()
            stored = self.stored()
            return all(stored.get(key) == count for key, count in sent.per_slot.items())
        try:
            wait_for(complete, timeout, "every sent point in the queue", interval=0.5)
        finally:
            time.sleep(1.0)  # anything duplicated late shows too
            self.poll()

    def check_exactly_once(self, sent: Sent) -> dict[str, int]:
        """Assert each slot holds exactly its points; returns the table's figures."""
        stored = self.stored()
        conflicting = {key: values for key, values in self.values.items()
                       if key[0].startswith("durability.") and len(set(values)) > 1}
        assert not conflicting, f"slots got messages with different values: {conflicting}"
        assert set(stored) == set(sent.per_slot), "slots stored that were never sent, or missing"
        wrong = {key: (stored[key], count) for key, count in sent.per_slot.items() if stored[key] != count}
        assert not wrong, f"(stored, sent) differ: {wrong}"
        duplicated = sum(len(values) - 1 for key, values in self.values.items()  # repeated messages
                         if key[0].startswith("durability."))
        return {"sent": sent.total, "stored": sent.total, "duplicated": duplicated, "lost": 0}

    def self_metric(self, name: str) -> list[float]:
        return [value for (metric, _), values in self.values.items() if metric.endswith(".gateway." + name)
                for value in values]


def gateway_config(turok_config, tmp_path: Path, proxy: Proxy, **changes):
    config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION)
    settings = dict(aws_endpoint_url=proxy.url, plaintext_port=free_port(), plaintext_udp_port=free_port(),
                    pickle_port=free_port(), statsd_port=free_port(), flush_interval_seconds=0.2,
                    window_grace_seconds=GRACE, self_metrics_interval_seconds=0, aws_threads=2)
    return config.replace(**{**settings, **changes})


def listening(port: int):
    """Ready once the gateway has opened its spool (its ports listen before that) and serves."""
    def ready(log_path: Path) -> bool:
        starts = log_path.read_text().count(") starting up.")
        if log_path.read_text().count("points of open windows recovered") < starts:
            return False
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    return ready


def send_acknowledged(port: int, data: bytes) -> None:
    """Send, half-close and wait for the gateway to close too: it has read (and journaled)
    every byte before it sees the end of the stream."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def final_counters(log_path: Path) -> dict:
    stopped = re.findall(r"turok-gateway: stopped; (\{.*\})", log_path.read_text())
    assert stopped, "the gateway did not log its final counters"
    return ast.literal_eval(stopped[-1])


def report(scenario: str, figures: dict) -> None:
    print(f"\nRELIABILITY {scenario}: {figures}")


def stop(process, timeout: float = 40) -> int:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout)
    assert code in (0, -signal.SIGTERM), process.stdout.read()
    return code


METRICS = [f"durability.m{i:02d}" for i in range(20)]


# --- (a) SIGKILL after the gateway read the input ----------------------------------------------

def test_sigkill_after_acknowledged_input_loses_and_duplicates_nothing(turok_config, moto_endpoint, tmp_path):
    proxy = Proxy(int(moto_endpoint.rsplit(":", 1)[1]))
    proxy.open()
    config = gateway_config(turok_config, tmp_path, proxy)
    queue, sent = Queue(turok_config), Sent()
    peak = 0
    try:
        with running_twistd("turok-gateway", config, tmp_path, listening(config.plaintext_port),
                            "the gateway") as (log_path, process):
            # windows of past slots are released and sent before the kill, current ones stay open
            now = int(time.time())
            for back in (40, 30, 20):
                send_acknowledged(config.plaintext_port, sent.lines(METRICS, now - back))
            wait_for(lambda: queue.poll() or queue.stored(), 10, "the past windows in the queue")
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                send_acknowledged(config.plaintext_port, sent.lines(METRICS, int(time.time())))
                time.sleep(0.1)
            peak = rss_bytes(process.pid)
            process.kill()
            process.wait(10)
        queue.poll()
        with running_twistd("turok-gateway", config, tmp_path, listening(config.plaintext_port),
                            "the restarted gateway") as (log_path, process):
            text = log_path.read_text()
            recovered = int(re.findall(r"and (\d+) points of open windows recovered", text)[-1])
            assert recovered > 0
            queue.wait_for(sent, 30)
            peak = max(peak, rss_bytes(process.pid))
            stop(process)
    finally:
        proxy.close()
    figures = queue.check_exactly_once(sent)
    figures.update(refused=0, peak_rss_mb=round(peak / 2 ** 20), replayed=recovered)
    report("sigkill", figures)


# --- (b) SQS unreachable until the spool's drain backs off its longest ------------------------------

def test_sqs_outage_is_spooled_reported_and_drained(turok_config, moto_endpoint, tmp_path):
    proxy = Proxy(int(moto_endpoint.rsplit(":", 1)[1]))
    proxy.open()
    config = gateway_config(turok_config, tmp_path, proxy, self_metrics_interval_seconds=2)
    queue, sent = Queue(turok_config), Sent()
    peak = 0
    try:
        with running_twistd("turok-gateway", config, tmp_path, listening(config.plaintext_port),
                            "the gateway") as (log_path, process):
            proxy.close()
            # the outage lasts until the first closed windows (a slot and its grace) failed to go
            # out, then as long as the drain's retries take to reach their longest backoff
            outage_end = time.monotonic() + STEP + GRACE + 10
            first_failure = None
            while time.monotonic() < outage_end:
                started = time.monotonic()
                send_acknowledged(config.plaintext_port, sent.lines(METRICS, int(time.time())))
                assert time.monotonic() - started < 2, "the gateway stopped accepting during the outage"
                peak = max(peak, rss_bytes(process.pid))
                if first_failure is None and "wait in the spool" in log_path.read_text():
                    first_failure = time.monotonic()
                    outage_end = first_failure + DRAIN_BACKOFF.cap
                time.sleep(0.2)
            assert first_failure is not None, "no window went to the spool during the outage"
            queue.poll()
            assert not queue.stored(), "nothing can reach SQS through a closed endpoint"
            proxy.open()
            for _ in range(10):  # and a little more after it is back
                send_acknowledged(config.plaintext_port, sent.lines(METRICS, int(time.time())))
                time.sleep(0.2)
            queue.wait_for(sent, 40)
            wait_for(lambda: "takes messages again" in log_path.read_text(), 5, "the recovery log line")
            peak = max(peak, rss_bytes(process.pid))
            stop(process)
        counters = final_counters(log_path)
    finally:
        proxy.close()
    figures = queue.check_exactly_once(sent)
    backlog = queue.self_metric("spool_backlog_bodies")
    assert max(backlog) > 0, "the backlog never showed in the self-metrics"
    assert counters["send_errors"] > 0 and counters["bodies_dropped"] == 0
    figures.update(refused=0, peak_rss_mb=round(peak / 2 ** 20), peak_backlog_bodies=max(backlog))
    report("sqs-outage", figures)


# --- (c) overload past a tiny spool bound -----------------------------------------------------------

def test_past_the_spool_bound_tcp_waits_udp_drops_and_memory_stays_bounded(turok_config, moto_endpoint,
                                                                           tmp_path):
    proxy = Proxy(int(moto_endpoint.rsplit(":", 1)[1]))
    proxy.open()
    config = gateway_config(turok_config, tmp_path, proxy, spool_max_bytes=512 * 1024)
    queue, sent = Queue(turok_config), Sent()
    udp_sent = peak = 0
    rss_limit = 200 * 2 ** 20
    many = [f"durability.load{i:04d}" for i in range(1000)]
    chance = random.Random(5)
    try:
        with running_twistd("turok-gateway", config, tmp_path, listening(config.plaintext_port),
                            "the gateway") as (log_path, process):
            proxy.close()  # SQS is down: the spool can only grow
            tcp = socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10)
            tcp.setblocking(False)
            # each batch one older slot, closed already: its windows go to the body spool at the
            # next flush, so the bodies (not only the journal) reach the bound
            oldest = int(time.time()) - 30
            pending, batches = b"", 0
            blocked_since = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # push until the gateway stops reading for 3 s
                if not pending:
                    values = [chance.randrange(1, 1000) for _ in many]
                    pending = sent.lines(many, oldest - STEP * batches, values)
                    batches += 1
                try:
                    pending = pending[tcp.send(pending):]
                    blocked_since = None
                except BlockingIOError:
                    blocked_since = blocked_since or time.monotonic()
                    if time.monotonic() - blocked_since > 3:
                        break
                    time.sleep(0.05)
                peak = max(peak, rss_bytes(process.pid))
            assert blocked_since is not None and time.monotonic() - blocked_since > 3, \
                "the gateway never stopped reading"
            assert "TCP input paused" in log_path.read_text()
            # UDP meanwhile: refused and counted, never buffered
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for _ in range(20):
                    udp.sendto(b"durability.udp 1 %d\n" % int(time.time()), ("127.0.0.1", config.plaintext_udp_port))
                    udp_sent += 1
                    time.sleep(0.01)
            time.sleep(1)
            peak = max(peak, rss_bytes(process.pid))
            assert peak < rss_limit
            # SQS back: the spool drains, reading resumes, the client's data all gets in
            proxy.open()
            tcp.setblocking(True)
            tcp.settimeout(60)
            tcp.sendall(pending)
            tcp.shutdown(socket.SHUT_WR)
            assert tcp.recv(1) == b""
            tcp.close()
            queue.wait_for(sent, 50)
            assert "input resumed" in log_path.read_text()
            peak = max(peak, rss_bytes(process.pid))
            stop(process)
        counters = final_counters(log_path)
    finally:
        proxy.close()
    dropped = counters["points_dropped_overload"]
    assert dropped == udp_sent, "every UDP point sent while over the bound is refused and counted"
    assert counters["backpressure_pauses"] >= 1
    figures = queue.check_exactly_once(sent)
    assert peak < rss_limit
    figures.update(sent=figures["sent"] + udp_sent, refused=dropped, peak_rss_mb=round(peak / 2 ** 20))
    report("overload", figures)


# --- (d) SIGTERM -----------------------------------------------------------------------------------

def test_sigterm_delivers_open_windows_or_keeps_them_for_the_next_start(turok_config, moto_endpoint, tmp_path):
    proxy = Proxy(int(moto_endpoint.rsplit(":", 1)[1]))
    proxy.open()
    config = gateway_config(turok_config, tmp_path, proxy)
    queue, sent = Queue(turok_config), Sent()
    try:
        # SQS up: everything, open windows included, is sent before the process exits
        with running_twistd("turok-gateway", config, tmp_path, listening(config.plaintext_port),
                            "the gateway") as (log_path, process):
            for _ in range(5):
                send_acknowledged(config.plaintext_port, sent.lines(METRICS, int(time.time())))
            peak = rss_bytes(process.pid)
            stop(process)
        queue.poll()
        figures = queue.check_exactly_once(sent)
        report("sigterm", {**figures, "refused": 0, "peak_rss_mb": round(peak / 2 ** 20)})
        assert "shutting down, spooling" in log_path.read_text()

        # SQS down at shutdown: the exit is prompt and the windows wait in the spool
        later = Sent()
        with running_twistd("turok-gateway", config, tmp_path, listening(config.plaintext_port),
                            "the gateway") as (log_path, process):
            for _ in range(5):
                send_acknowledged(config.plaintext_port, later.lines(METRICS, int(time.time())))
            peak = rss_bytes(process.pid)
            proxy.close()
            started = time.monotonic()
            stop(process, timeout=60)
            assert time.monotonic() - started < 45
        assert "they stay in the spool" in log_path.read_text()
        proxy.open()
        with running_twistd("turok-gateway", config, tmp_path, listening(config.plaintext_port),
                            "the restarted gateway") as (log_path, process):
            queue2 = Queue(turok_config)
            queue2.wait_for(later, 20)
            peak = max(peak, rss_bytes(process.pid))
            stop(process)
        figures = queue2.check_exactly_once(later)
        report("sigterm-sqs-down", {**figures, "refused": 0, "peak_rss_mb": round(peak / 2 ** 20)})
    finally:
        proxy.close()
