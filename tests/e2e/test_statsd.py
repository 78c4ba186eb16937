"""StatsD through the whole stack: UDP/TCP into the gateway, values back from graphite-web's render API.

The module runs its own DevStack with the public vectors' settings (10 s flush, legacy
namespace, 90th percentile). Everything is sent within one flush interval, just after a flush,
so it all leaves in the next flush and lands in one 10 s slot, which is then read back.
"""
from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest
import statsd

from tests.conftest import ROOT, free_port, wait_for
from tests.e2e.conftest import graphite_get
from turok_core.dev.stack import DevStack
from turok_core.model.config import TurokConfig

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "data" / "statsd-vectors.json").read_text())
FLUSH = VECTORS["config"]["flush_interval_s"]
STEP = 10  # the shipped schema's base resolution for stats.*

# malformed input sent in the same interval; each item is (transport, payload, bad lines it holds)
MALFORMED = [
    ("udp", b"garbage", 1),
    ("udp", b"\xff\xfe\xfd:1|c", 1),  # not UTF-8
    ("udp", b"nan:nan|c\ninf:inf|g\nninf:-inf|ms", 3),
    ("udp", b"rate:1|c|@0\nrate:1|c|@-1\nrate:1|c|@x", 3),
    ("udp", b"unknown:1|zz\nnotype:1\nneg:-1|ms", 3),
    ("udp", b"huge:" + b"9" * 60000 + b"|c", 1),  # one 60 KB line: over the line limit
    ("tcp", b"x" * 20000 + b"\nalso:bad|c\n", 2),  # an over-long TCP line, then a bad value
]


def expected_bad_lines() -> int:
    return sum(count for _, _, count in MALFORMED)


@pytest.fixture(scope="module")
def statsd_stack(tmp_path_factory):
    config = TurokConfig(
        table_prefix=f"sd{uuid.uuid4().hex[:6]}",
        plaintext_port=free_port(), plaintext_udp_port=free_port(), pickle_port=free_port(),
        statsd_port=free_port(), local_aws_port=free_port(), graphite_port=free_port(),
        cache_port=free_port(), gateway_cache_port=free_port(), block_close_delay_seconds=2, window_grace_seconds=2,
        flush_interval_seconds=0.5, receive_wait_seconds=1,
        index_refresh_seconds=0.5,
        statsd_flush_interval_seconds=FLUSH,
        statsd_legacy_namespace=VECTORS["config"]["legacy_namespace"],
        statsd_percent_thresholds=",".join(str(p) for p in VECTORS["config"]["percent_threshold"]),
    )
    local = DevStack(config, tmp_path_factory.mktemp("statsd-stack"), extra_env={"PYTHONPATH": str(ROOT)})
    try:
        local.start(timeout=90)
        yield local
    finally:
        local.stop()


def send_within_one_interval(stack) -> int:
    """Wait for a flush to pass, send everything, return the slot of the flush that carries it."""
    # the gateway flushes StatsD in the middle of each interval-aligned slot (…5 s)
    wait_for(lambda: 6.0 <= time.time() % FLUSH < 7.0, FLUSH + 1, "just after a StatsD flush", interval=0.05)
    sent_at = time.time()
    port = stack.config.statsd_port
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for packet in VECTORS["packets"]:
        udp.sendto(packet.encode(), ("127.0.0.1", port))

    # the PyPI statsd client, over UDP and TCP
    client = statsd.StatsClient("127.0.0.1", port, prefix="pyudp")
    client.incr("hits", 3)
    client.incr("hits")
    client.decr("misses", 2)
    client.timing("latency", 120)
    client.timing("latency", 80)
    client.gauge("temperature", 20)
    client.gauge("temperature", -5, delta=True)
    client.set("visitors", "alice")
    client.set("visitors", "bob")
    with client.pipeline() as pipe:
        pipe.incr("piped", 7)
        pipe.timing("piped_time", 10)
    tcp_client = statsd.TCPStatsClient("127.0.0.1", port, prefix="pytcp", timeout=5)
    tcp_client.incr("hits", 11)
    tcp_client.timing("latency", 42)
    tcp_client.gauge("load", 1.5)
    with tcp_client.pipeline() as pipe:
        pipe.incr("piped", 2)
        pipe.set("seen", "x")
    tcp_client.close()

    for transport, payload, _ in MALFORMED:
        if transport == "udp":
            udp.sendto(payload, ("127.0.0.1", port))
        else:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(payload)
    udp.sendto(b"after_bad:1|c", ("127.0.0.1", port))  # bad input does not block what follows
    udp.close()
    assert time.time() % FLUSH < 9.0, "sending took too long to stay within one flush interval"
    flush_time = sent_at - sent_at % FLUSH + FLUSH / 2 + FLUSH
    return int(flush_time - flush_time % STEP)


@pytest.fixture(scope="module")
def flushed_slot(statsd_stack):
    return send_within_one_interval(statsd_stack)


def render_slot(stack, targets: list[str], slot: int) -> dict[str, float]:
    """Each target's value at ``slot`` (None when absent)."""
    series = graphite_get(stack, "/render", target=targets, format="json",
                          **{"from": slot - STEP, "until": slot})
    return {s["target"]: dict((t, v) for v, t in s["datapoints"]).get(slot) for s in series}


def read_back(stack, expected: dict[str, float], slot: int, timeout: float = 60) -> dict[str, float]:
    """Poll graphite-web until every expected name has a value at ``slot``; returns them."""
    # graphite-web's target grammar needs '=' escaped in a plain (tagged) path
    targets = {name.replace("=", "\\="): name for name in expected}

    def ready():
        got = {}
        names = list(targets)
        for start in range(0, len(names), 40):
            for target, value in render_slot(stack, names[start:start + 40], slot).items():
                got[targets.get(target, target)] = value
        return got if all(got.get(name) is not None for name in expected) else None

    return wait_for(ready, timeout, f"{len(expected)} StatsD series at {slot} in graphite-web", interval=1.0)


def test_public_vectors_through_the_stack_value_for_value(statsd_stack, flushed_slot):
    expected = VECTORS["expected"]
    got = read_back(statsd_stack, expected, flushed_slot)
    assert {name: got[name] for name in expected} == {name: pytest.approx(v, rel=1e-9, abs=1e-12)
                                                      for name, v in expected.items()}


def test_pypi_statsd_client_over_udp_and_tcp(statsd_stack, flushed_slot):
    expected = {
        "stats_counts.pyudp.hits": 4.0, "stats.pyudp.hits": 0.4,
        "stats_counts.pyudp.misses": -2.0,
        "stats.timers.pyudp.latency.count": 2.0, "stats.timers.pyudp.latency.mean": 100.0,
        "stats.timers.pyudp.latency.upper": 120.0, "stats.timers.pyudp.latency.lower": 80.0,
        "stats.gauges.pyudp.temperature": 15.0,
        "stats.sets.pyudp.visitors.count": 2.0,
        "stats_counts.pyudp.piped": 7.0, "stats.timers.pyudp.piped_time.sum": 10.0,
        "stats_counts.pytcp.hits": 11.0,
        "stats.timers.pytcp.latency.median": 42.0,
        "stats.gauges.pytcp.load": 1.5,
        "stats_counts.pytcp.piped": 2.0,
        "stats.sets.pytcp.seen.count": 1.0,
    }
    got = read_back(statsd_stack, expected, flushed_slot)
    assert got == pytest.approx(expected)
    found = graphite_get(statsd_stack, "/metrics/find", query="stats.timers.pyudp.*")
    assert sorted(node["text"] for node in found) == ["latency", "piped_time"]


def test_malformed_input_is_counted_and_blocks_nothing(statsd_stack, flushed_slot):
    expected = {"stats_counts.statsd.bad_lines_seen": float(expected_bad_lines()), "stats_counts.after_bad": 1.0}
    got = read_back(statsd_stack, expected, flushed_slot)
    assert got == expected
    # nothing of the bad lines reached Graphite
    for query in ("stats_counts.nan", "stats_counts.rate", "stats.gauges.inf", "stats_counts.huge",
                  "stats_counts.unknown", "stats_counts.also"):
        assert graphite_get(statsd_stack, "/metrics/find", query=query) == []
    assert all(process.poll() is None for process in statsd_stack.processes.values())
