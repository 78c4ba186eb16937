"""turok.agents.<host>.{gateway,turokd,indexer}.* through the running stack, read back in graphite-web."""
from __future__ import annotations

import contextlib
import socket
import uuid

import pytest

from tests.conftest import ROOT, free_port, wait_for
from tests.e2e.conftest import graphite_get
from turok_core.dev.stack import DevStack
from turok_core.model.config import TurokConfig

HOST = socket.gethostname().replace(".", "_")
AGENTS = f"turok.agents.{HOST}"
# self-metrics every 2 s into 1 s slots: every report is a slot of its own, so sums are exact
SCHEMAS = """[turok_self]
pattern = ^turok\\.agents\\.
retentions = 1s:1d

[default]
pattern = .*
retentions = 10s:1d
"""


@contextlib.contextmanager
def running_stack(run_dir, **overrides):
    """A DevStack of its own (counters start at zero) reporting self-metrics every 2 s."""
    (run_dir / "schemas.conf").write_text(SCHEMAS)
    settings = dict(
        table_prefix=f"sm{uuid.uuid4().hex[:6]}",
        plaintext_port=free_port(), plaintext_udp_port=free_port(), pickle_port=free_port(),
        statsd_port=free_port(), local_aws_port=free_port(), graphite_port=free_port(),
        cache_port=free_port(), gateway_cache_port=free_port(), block_close_delay_seconds=2, window_grace_seconds=1,
        flush_interval_seconds=0.5, receive_wait_seconds=1, index_refresh_seconds=0.5,
        self_metrics_interval_seconds=2, schemas_file=str(run_dir / "schemas.conf"),
    )
    settings.update(overrides)
    local = DevStack(TurokConfig(**settings), run_dir, extra_env={"PYTHONPATH": str(ROOT)})
    try:
        local.start(timeout=90)
        yield local
    finally:
        local.stop()


def series(stack, target: str, window: str = "-10min") -> dict[str, list[float]]:
    """Every series ``target`` matches: its non-null values."""
    rendered = graphite_get(stack, "/render", target=target, format="json", **{"from": window})
    return {s["target"]: [v for v, _ in s["datapoints"] if v is not None] for s in rendered}


def total(stack, target: str) -> float:
    return sum(sum(values) for values in series(stack, target).values())


def eventually(stack, target: str, check, timeout: float = 20) -> None:
    """Wait until ``check(total of target)`` holds (a count may still be in the next interval)."""
    wait_for(lambda: check(total(stack, target)), timeout, f"{target} to pass {check}", interval=0.5)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("selfmetrics")) as local:
        yield local


def test_every_service_reports_itself_under_turok_agents(own_stack):
    stack = own_stack
    tcp_lines = b"".join(b"sm.tcp.m%d %d -1\n" % (i % 3, i) for i in range(7)) + b"not a line\nsm.x nan -1\n"
    with socket.create_connection(("127.0.0.1", stack.config.plaintext_port), timeout=10) as sock:
        sock.sendall(tcp_lines)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(5):
            udp.sendto(b"sm.udp.m 1 -1\n", ("127.0.0.1", stack.config.plaintext_udp_port))

    def nodes(query: str) -> set[str]:
        return {n["text"] for n in graphite_get(stack, "/metrics/find", query=query)}

    wait_for(lambda: nodes(f"{AGENTS}.*") == {"gateway", "turokd", "indexer"}, 50,
             f"{AGENTS}.{{gateway,turokd,indexer}} in /metrics/find", interval=0.5)
    # each point counted once, in the interval it arrived: the series sums to what was sent
    # (points_received also counts what other receivers, e.g. StatsD's own stats, feed in)
    eventually(stack, f"{AGENTS}.gateway.points_by_protocol.plaintext_tcp", lambda n: n == 7, 30)
    eventually(stack, f"{AGENTS}.gateway.points_by_protocol.plaintext_udp", lambda n: n == 5)
    eventually(stack, f"{AGENTS}.gateway.points_received", lambda n: n >= 12)
    eventually(stack, f"{AGENTS}.gateway.bad_lines", lambda n: n == 1)  # no other receiver had bad input
    eventually(stack, f"{AGENTS}.gateway.bad_lines_by_protocol.plaintext_tcp", lambda n: n == 1)
    eventually(stack, f"{AGENTS}.gateway.nan_dropped", lambda n: n == 1)
    eventually(stack, f"{AGENTS}.gateway.bytes_sent", lambda n: n > 0)
    eventually(stack, f"{AGENTS}.gateway.bodies_sent", lambda n: n > 0)
    eventually(stack, f"{AGENTS}.gateway.send_errors", lambda n: n == 0)
    # (a name seen for the first time is graphable once the indexer has added it)
    assert {"plaintext_tcp", "plaintext_udp"} <= nodes(f"{AGENTS}.gateway.points_by_protocol.*")
    assert {"open_windows", "buffered_points", "memory_rss_bytes", "cpu_seconds"} <= nodes(f"{AGENTS}.gateway.*")

    # turokd stored the user's 4 metrics (and the self-metrics) and announced them; the indexer added them
    eventually(stack, f"{AGENTS}.indexer.names_added", lambda n: n >= 4, 30)
    eventually(stack, f"{AGENTS}.turokd.messages_received", lambda n: n >= 1)
    eventually(stack, f"{AGENTS}.turokd.slots_received", lambda n: n >= 4)
    # (the blocks of current data close after their 15 minutes: held until then, reported as gauges)
    eventually(stack, f"{AGENTS}.turokd.open_blocks", lambda n: n >= 4)
    eventually(stack, f"{AGENTS}.turokd.held_messages", lambda n: n >= 1)
    eventually(stack, f"{AGENTS}.turokd.names_announced", lambda n: n >= 4)
    eventually(stack, f"{AGENTS}.indexer.shard_writes", lambda n: n >= 1)
    eventually(stack, f"{AGENTS}.turokd.bodies_rejected", lambda n: n == 0)
    eventually(stack, f"{AGENTS}.turokd.errors", lambda n: n == 0)
    eventually(stack, f"{AGENTS}.indexer.errors", lambda n: n == 0)
    # the receive lag is a gauge of seconds: present, small on an idle local stack
    lags = [v for values in series(stack, f"{AGENTS}.{{turokd,indexer}}.queue_lag_seconds").values() for v in values]
    assert lags and all(0 <= lag < 30 for lag in lags)
    memory = series(stack, f"{AGENTS}.turokd.memory_rss_bytes")[f"{AGENTS}.turokd.memory_rss_bytes"]
    assert all(10e6 < m < 4e9 for m in memory)
    for service in ("gateway", "turokd", "indexer"):
        assert "cpu_seconds" in nodes(f"{AGENTS}.{service}.*")
