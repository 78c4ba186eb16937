"""Carbon plaintext in over TCP and UDP, graphite-web's render and find APIs out, on real processes."""
from __future__ import annotations

import re
import socket
import time

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import graphite_get
from turok_core.runtime.aws import make_client
from turok_core.storage.table_catalog import list_table_names
from turok_core.storage.table_names import table_name
from turok_core.storage.tables import BlockStore
from turok_core.wire.cache_query import CacheClient

STEP = 10  # the shipped default schema's base resolution


@pytest.fixture(scope="module")
def midnight():
    """The latest UTC midnight with a minute of history after it that is already closed."""
    now = int(time.time())
    day = now - now % 86400
    return day if now - day > 180 else day - 86400


def send_tcp(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(payload)
    return sock


def render(stack, target: str, start: int, end: int):
    series = graphite_get(stack, "/render", target=target, format="json", **{"from": start, "until": end})
    return {point[1]: point[0] for s in series for point in s["datapoints"]}


def test_plaintext_tcp_and_udp_reach_graphite_web_across_two_utc_days(stack, midnight):
    m = midnight
    tcp_lines = [
        f"e2e.tcp.avg 1 {m - 30}", f"e2e.tcp.avg 3 {m - 25}",  # one 10 s slot: average 2
        f"e2e.tcp.avg 10 {m - 10}", f"e2e.tcp.avg 20 {m + 10}",
        f"e2e.tcp.hits.count 5 {m + 10}", f"e2e.tcp.hits.count 7 {m + 15}",  # sum → 12
        f"e2e.tcp.hits.count 1 {m - 50}",
    ]
    sock = send_tcp(stack.config.plaintext_port, ("\n".join(tcp_lines) + "\n").encode())
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(f"e2e.udp.load 0.5 {m - 20}\ne2e.udp.load 1.5 {m + 20}\n".encode(),
               ("127.0.0.1", stack.config.plaintext_udp_port))
    udp.sendto(f"e2e.udp.load 2.5 {m + 30}".encode(), ("127.0.0.1", stack.config.plaintext_udp_port))
    sock.close()

    start, end = m - 60, m + 60
    expected = {
        "e2e.tcp.avg": {m - 30: 2.0, m - 10: 10.0, m + 10: 20.0},
        "e2e.tcp.hits.count": {m - 50: 1.0, m + 10: 12.0},
        "e2e.udp.load": {m - 20: 0.5, m + 20: 1.5, m + 30: 2.5},
    }
    for target, points in expected.items():
        got = wait_for(lambda: (lambda r: r if {t: v for t, v in r.items() if v is not None} == points else None)(
            render(stack, target, start, end)), 90, f"{target} in graphite-web", interval=0.5)
        # whisper's alignment: the first slot is from - from % step + step, the last is until's
        assert sorted(got) == list(range(start + STEP, end + STEP, STEP))

    # Grafana's maxDataPoints: graphite-web would average a counter's slots; the finder sums them
    # (1 and 12 in one point: 13, where graphite-web's average would show 6.5)
    consolidated = graphite_get(stack, "/render", target="e2e.tcp.hits.count", format="json", maxDataPoints=1,
                                **{"from": start, "until": end})[0]["datapoints"]
    assert [v for v, _t in consolidated] == [13.0]

    found = graphite_get(stack, "/metrics/find", query="e2e.*")
    assert sorted((n["text"], n["leaf"]) for n in found) == [("tcp", 0), ("udp", 0)]
    found = graphite_get(stack, "/metrics/find", query="e2e.tcp.{avg,hits}")
    assert sorted((n["text"], n["leaf"]) for n in found) == [("avg", 1), ("hits", 0)]
    found = graphite_get(stack, "/metrics/find", query="e2e.*.[a-h]*", format="completer")["metrics"]
    assert sorted((n["path"], n["is_leaf"]) for n in found) == [("e2e.tcp.avg", "1"), ("e2e.tcp.hits.", "0")]

    # the blocks closed long ago: turokd's next tick writes them to the day tables
    prefix, joiner = stack.config.table_prefix, stack.config.table_joiner
    # e.g. e2e…_24-11-2026_10sec
    wanted = {table_name(prefix, joiner, m - 1, STEP), table_name(prefix, joiner, m, STEP)}
    tables = wait_for(lambda: (lambda names: names if wanted <= set(names) else None)(
        list_table_names(make_client("dynamodb", stack.config))), 30, "day tables")
    assert f"{prefix}_" + time.strftime("%d-%m-%Y", time.gmtime(m)) + "_10sec" in tables


def bad_lines_so_far(stack) -> int:
    """The gateway's running total of malformed input lines, from its latest report."""
    totals = re.findall(r"malformed input line\(s\) ignored \((\d+) in all\)", stack.log_path("gateway").read_text())
    return int(totals[-1]) if totals else 0


def test_malformed_lines_are_counted_and_the_connection_stays_up(stack, midnight):
    m = midnight
    before = bad_lines_so_far(stack)  # other tests share this gateway
    sock = send_tcp(stack.config.plaintext_port,
                    f"e2e.mixed.good 1 {m - 40}\n".encode()
                    + b"garbage\n"
                    + b"e2e.mixed.bad notanumber 123\n"
                    + b"\xff\xfe.bad.utf8 1 123\n"
                    + b"e2e.mixed.bad 1 2 3 4\n"
                    + f"e2e.mixed.nan nan {m - 40}\n".encode())
    time.sleep(0.5)
    sock.sendall(f"e2e.mixed.good 2 {m - 30}\n".encode())  # same connection, still served
    sock.close()
    # (SQS may deliver the two sends in either order: wait for both)
    wait_for(lambda: (lambda r: r.get(m - 30) == 2.0 and r.get(m - 40) == 1.0)(
        render(stack, "e2e.mixed.good", m - 60, m)),
             90, "good lines next to malformed ones", interval=0.5)
    assert [n["text"] for n in graphite_get(stack, "/metrics/find", query="e2e.mixed.*")] == ["good"]
    # garbage, a non-number, a non-UTF-8 name and a line of five fields; NaN is dropped silently
    wait_for(lambda: bad_lines_so_far(stack) - before >= 4, 30, "the gateway to log the malformed lines")
    assert bad_lines_so_far(stack) - before == 4


def test_the_newest_points_are_rendered_at_once_and_until_their_block_is_written(stack):
    """graphite-web sees a point as soon as the gateway has it (the gateway answers cache queries
    for its open windows, like carbon-cache), then from turokd's memory until its block is written
    once, when it closes; in the finest archive and, rolled up on read, in the coarser ones."""
    # a name graphite-web knows already (a new name shows once the indexer has it, as a new
    # whisper file does for carbon)
    earlier = int(time.time()) - 600
    send_tcp(stack.config.plaintext_port, f"e2e.fresh.hits.count 1 {earlier}\n".encode()).close()
    wait_for(lambda: render(stack, "e2e.fresh.hits.count", earlier - 60, earlier + 60), 60, "the name indexed")
    # at the start of a slot, so its window stays open in the gateway for step + grace seconds
    wait_for(lambda: time.time() % STEP < 1.0, STEP + 1, "the start of a slot", interval=0.05)
    now = time.time()
    slot = int(now) - int(now) % STEP
    sock = send_tcp(stack.config.plaintext_port,
                    f"e2e.fresh.hits.count 4 {slot}\ne2e.fresh.hits.count 6 {slot + 1}\n".encode())
    sock.close()
    got = wait_for(lambda: render(stack, "e2e.fresh.hits.count", slot - 600, slot + STEP).get(slot), 30,
                   "the newest point in graphite-web", interval=0.1)
    seen_at = time.time()
    assert got == 10.0  # a sum (the shipped storage-aggregation.conf: *.count sums, xFilesFactor 0)
    # seen while its window was still open in the gateway: before the slot even ended
    assert seen_at < slot + STEP, f"seen {seen_at - now:.1f} s after sending"
    # after the window went to turokd, still seen: from turokd's memory, not from DynamoDB, since
    # its block (90 slots, 15 minutes) is still open
    turokd = CacheClient([f"127.0.0.1:{stack.config.cache_port}"], timeout=5)
    wait_for(lambda: turokd.query(["e2e.fresh.hits.count"], slot, slot + STEP).get("e2e.fresh.hits.count"), 30,
             "the window released to turokd, which holds it", interval=0.2)
    assert time.time() > slot + STEP + stack.config.window_grace_seconds  # released once closed, not before
    assert render(stack, "e2e.fresh.hits.count", slot - 600, slot + STEP).get(slot) == 10.0
    store = BlockStore(make_client("dynamodb", stack.config), stack.config)
    assert store.fetch_series(["e2e.fresh.hits.count"], STEP, slot, slot + STEP) == {"e2e.fresh.hits.count": [None]}
    # two days back the answer comes from the 1-minute archive: rolled up from the held slot
    minute = slot - slot % 60
    two_days = graphite_get(stack, "/render", target="e2e.fresh.hits.count", format="json",
                             **{"from": "-2d"})
    points = {t: v for v, t in two_days[0]["datapoints"] if v is not None}
    assert two_days[0]["datapoints"][1][1] - two_days[0]["datapoints"][0][1] == 60 and points[minute] == 10.0
