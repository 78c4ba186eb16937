"""Connection limits, idle timeouts, an endless line and the metric-name rule against a real
``twistd turok-gateway``.

One gateway with ``max_connections = 200`` per TCP listener: a thousand idle connections to the
plaintext port leave 200 open and close the other 800 at once, the gateway's memory stays
bounded and a client connected before the flood is still served (its point reaches SQS); pickle
and StatsD TCP have the same limit. A client sending megabytes without a newline is cut off with
bounded memory and its connection keeps working after its next newline. A second gateway with a
2 s idle timeout closes silent connections of all three TCP listeners and keeps a chatty one.
The same hostile names sent over plaintext TCP and UDP, pickle and StatsD reach SQS normalised by
one rule, or are refused and counted.
"""
from __future__ import annotations

import re
import selectors
import socket
import time
from contextlib import ExitStack

import pytest

from tests.conftest import free_port, running_twistd, wait_for
from tests.support.pickle_frames import encode_frame
from tests.support.queues import SqsReader

LIMIT = 200
FLOOD = 1000
MAX_RSS_GROWTH = 40 * 1024 * 1024  # 200 connections' buffers are well under this; 1000 unbounded ones too…


def gateway_config(turok_config, **changes):
    return turok_config.replace(
        interface="127.0.0.1", plaintext_port=free_port(), plaintext_udp_port=free_port(),
        pickle_port=free_port(), statsd_port=free_port(), flush_interval_seconds=0.2,
        window_grace_seconds=1, aws_threads=2, **changes)


def start_gateway(config, workdir):
    def listening(log_path):
        for port in (config.plaintext_port, config.pickle_port, config.statsd_port):
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True
    return running_twistd("turok-gateway", config, workdir, listening, "the gateway's TCP ports")


def rss(pid: int, field: str = "VmRSS") -> int:
    """The process's resident memory in bytes (``VmHWM``: its peak so far)."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(field + r":\s+(\d+) kB", status.read()).group(1)) * 1024


def closed_by_gateway(socks: list[socket.socket], settle: float = 1.0, timeout: float = 20.0,
                      expect: int = 0) -> set[int]:
    """Indices of ``socks`` the gateway closed, once at least ``expect`` are and no more closes
    arrive for ``settle`` seconds (or ``timeout`` passes)."""
    closed: set[int] = set()
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
    deadline, quiet_since = time.monotonic() + timeout, time.monotonic()
    try:
        while time.monotonic() < deadline and (len(closed) < expect or time.monotonic() - quiet_since < settle):
            for key, _ in selector.select(0.1):
                try:
                    data = key.fileobj.recv(1)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                except BlockingIOError:
                    continue
                assert data == b"", "the gateway never writes to a receiver connection"
                closed.add(key.data)
                selector.unregister(key.fileobj)
                quiet_since = time.monotonic()
    finally:
        selector.close()
    return closed


def log_total(log_path, pattern: str) -> int:
    """The last running total a rate-limited log line reported (0 when none)."""
    found = re.findall(pattern, log_path.read_text())
    return int(found[-1]) if found else 0


@pytest.fixture
def limited_gateway(turok_config, tmp_path):
    config = gateway_config(turok_config, max_connections=LIMIT, idle_timeout_seconds=600,
                            statsd_flush_interval_seconds=1.0)
    with start_gateway(config, tmp_path) as (log, process):
        yield config, log, process


def test_a_thousand_idle_connections_are_bounded_and_a_client_is_still_served(limited_gateway, turok_config):
    config, log, process = limited_gateway
    reader = SqsReader(config)
    with ExitStack() as stack:
        good = stack.enter_context(socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10))
        time.sleep(0.3)  # accepted before the flood
        before = rss(process.pid)
        flood = [stack.enter_context(socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10))
                 for _ in range(FLOOD)]
        closed = closed_by_gateway(flood, expect=FLOOD - (LIMIT - 1))
        assert len(closed) == FLOOD - (LIMIT - 1), "the good client holds one of the 200 places"
        assert min(closed) >= LIMIT - 1, "the first connections in are the ones kept"
        growth = rss(process.pid) - before
        assert growth < MAX_RSS_GROWTH, f"the gateway grew by {growth} bytes"
        print(f"figures: {len(closed)} of {FLOOD} connections refused, RSS {before >> 20} -> "
              f"{rss(process.pid) >> 20} MiB, peak {rss(process.pid, 'VmHWM') >> 20} MiB")
        wait_for(lambda: log_total(log, r"closed a connection from [^:]+: 200 connections already open "
                                        r"\(max_connections\); (\d+) closed so far") >= 1, 10,
                 "the over-limit connections logged")

        # the client connected before the flood is still served
        now = int(time.time())
        good.sendall(b"limits.good 42 %d\n" % (now - 30))  # a closed window: sent at the next flush
        messages = reader.wait_for_count(1, 30)
        assert [(m.metric, m.datapoints) for m in messages if m.metric == "limits.good"] == [("limits.good", [42.0])]

        # the limit holds on the pickle and StatsD TCP listeners too
        for port in (config.pickle_port, config.statsd_port):
            extra = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
                     for _ in range(LIMIT + 20)]
            assert closed_by_gateway(extra, settle=0.5, expect=20) == set(range(LIMIT, LIMIT + 20))

        # closing the flood frees the places: a new client gets in and is kept
        for sock in flood:
            sock.close()
        time.sleep(0.5)
        late = stack.enter_context(socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10))
        assert closed_by_gateway([late], settle=0.5) == set()
    assert process.poll() is None


def test_an_endless_line_is_cut_off_with_bounded_memory(limited_gateway):
    config, log, process = limited_gateway
    reader = SqsReader(config)
    with socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10) as endless:
        endless.sendall(b"endless.name 1 ")
        time.sleep(0.3)
        before = rss(process.pid)
        chunk = b"9" * 65536
        for _ in range(320):  # 20 MB without a newline
            endless.sendall(chunk)
        time.sleep(0.5)
        growth = rss(process.pid) - before
        assert growth < 8 * 1024 * 1024, f"the gateway grew by {growth} bytes holding an endless line"
        print(f"figures: 20 MiB line, RSS {before >> 20} -> {rss(process.pid) >> 20} MiB, "
              f"peak {rss(process.pid, 'VmHWM') >> 20} MiB")
        assert closed_by_gateway([endless], settle=0.3) == set(), "an over-long line does not close the connection"
        # the over-long line ends at its newline; the next line is taken as usual
        endless.setblocking(True)
        endless.sendall(b"\nlimits.after 7 %d\n" % (int(time.time()) - 30))
        messages = reader.wait_for_count(1, 30)
        assert [(m.metric, m.datapoints) for m in messages] == [("limits.after", [7.0])]
    assert process.poll() is None


def test_idle_connections_are_closed_after_the_timeout(turok_config, tmp_path):
    config = gateway_config(turok_config, idle_timeout_seconds=2)
    with start_gateway(config, tmp_path) as (log, process), ExitStack() as stack:
        ports = (config.plaintext_port, config.pickle_port, config.statsd_port)
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10)) for port in ports]
        chatty = stack.enter_context(socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10))
        opened = time.monotonic()
        for _ in range(12):  # 6 s, a line every 0.5 s: never idle
            chatty.sendall(b"limits.chatty 1 %d\n" % int(time.time()))
            time.sleep(0.5)
        assert closed_by_gateway(idle, settle=0.1, timeout=1) == {0, 1, 2}
        assert time.monotonic() - opened >= 2
        assert closed_by_gateway([chatty], settle=0.3, timeout=1) == set()
        # and silent from now on, the chatty one goes too, within 2 s plus a quarter (and slack)
        quiet = time.monotonic()
        chatty.setblocking(True)
        chatty.settimeout(5)
        try:
            assert chatty.recv(1) == b""
        except ConnectionResetError:
            pass
        assert 1.4 <= time.monotonic() - quiet <= 3.5  # its last line left up to 0.5 s before
        wait_for(lambda: log_total(log, r"idle for 2.0s \(idle_timeout_seconds\); (\d+) so far") >= 1, 10,
                 "the idle closes logged")
    assert process.returncode is not None


def test_one_name_rule_on_every_port(limited_gateway):
    config, log, process = limited_gateway
    reader = SqsReader(config)
    stamp = int(time.time()) - 30  # a closed window: sent at the next flush
    names = ["{p}.ok", "{p}..dots.", "{p}.tag;b=2;a=1", "{p}.glob*", "{p}.ctl\x01", "{p}." + "x" * 1100]
    normal = ["{p}.ok", "{p}.dots", "{p}.tag;a=1;b=2"]

    def lines(prefix: str) -> bytes:
        return b"".join(b"%s 1 %d\n" % (name.format(p=prefix).encode(), stamp) for name in names)

    with socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10) as tcp:
        tcp.sendall(lines("tcp"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(lines("udp"), ("127.0.0.1", config.plaintext_udp_port))
        # StatsD: etsy's sanitising first (the glob and control characters go), then the rule
        udp.sendto(b"s..dots.:1|g\ns.tag:2|g|#b:2,a:1\ns.glob*:3|g\n...:4|g\n" + b"s" * 1100 + b":5|g\n",
                   ("127.0.0.1", config.statsd_port))
    with socket.create_connection(("127.0.0.1", config.pickle_port), timeout=10) as frames:
        frames.sendall(encode_frame([(name.format(p="pickle"), (stamp, 1)) for name in names]))
    expected = {name.format(p=p) for name in normal for p in ("tcp", "udp", "pickle")}
    expected |= {"stats.gauges.s.dots", "stats.gauges.s.tag;a=1;b=2", "stats.gauges.s.glob"}
    ours = ("tcp.", "udp.", "pickle.", "stats.gauges.")

    def arrived():
        reader.poll()
        return {m.metric for m in reader.messages if m.metric.startswith(ours)} >= expected
    wait_for(arrived, 30, f"{expected} on SQS", interval=0)
    assert {m.metric for m in reader.messages if m.metric.startswith(ours)} == expected
    refused = 3 * 3 + 2  # glob, control character and over-long per carbon port; "..." and the long key
    wait_for(lambda: sum(map(int, re.findall(r"(\d+) malformed input line", log.read_text()))) == refused, 30,
             f"{refused} refused names counted in the gateway's log")
    assert "metric name: character '*' is not allowed" in log.read_text()
    assert process.poll() is None
