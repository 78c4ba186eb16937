"""Hostile Carbon plaintext over TCP and UDP against a running gateway.

Truncated lines, garbage bytes, non-UTF-8, a line over ``max_line_length``, a client that never
sends a newline, NaN, inf and out-of-range timestamps: each is counted (the gateway's
``turok.agents.<host>.gateway.bad_lines_by_protocol.*`` series and its log), the gateway never
crashes or closes the connection, and a well-behaved client connected at the same time keeps
getting every point stored.
"""
from __future__ import annotations

import re
import socket
import time

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import graphite_get
from tests.e2e.test_selfmetrics import AGENTS, running_stack, total

GOOD_POINTS = 20


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("hostile")) as local:
        yield local


def still_open(sock: socket.socket) -> bool:
    """True when the peer has not closed ``sock`` (nothing to read, no EOF)."""
    sock.settimeout(0.2)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def render(stack, target: str, start: int, end: int) -> dict[int, float]:
    series = graphite_get(stack, "/render", target=target, format="json", **{"from": start, "until": end})
    return {t: v for s in series for v, t in s["datapoints"] if v is not None}


def test_hostile_input_is_counted_and_never_blocks_a_good_client(hostile_stack):
    stack = hostile_stack
    config = stack.config
    gateway = stack.processes["gateway"]
    now = int(time.time())
    base = now - now % 10 - 10  # a closed slot; the good client's points go one 10 s slot apart, backwards
    limit = config.max_line_length
    tcp_bad = [  # each one malformed line
        b"\x00\x01\x02garbage\xff\xfe\x80",  # garbage bytes, one field
        b"\xff\xfe.not.utf8 1 %d" % now,  # a name that is not UTF-8
        b"h.inf inf %d" % now, b"h.ninf -inf %d" % now,
        b"h.ts0 1 0", b"h.tsneg 1 -5", b"h.tsbig 1 253402300800", b"h.tsfloat 1 1e30",  # out of range
        b"h.two 1",  # truncated
        b"h.huge " + b"9" * (limit + 100) + b" %d" % now,  # over the line limit
    ]
    udp_bad = [
        b"\x00\xff\xfe garbage", b"\xff\xfe.not.utf8 1 %d" % now, b"u.inf inf %d" % now, b"u.ts0 1 0",
        b"u.tsneg 1 -1000", b"u.tsbig 1 253402300800", b"u.trunc 1",
        b"u.huge " + b"1" * 60_000 + b" %d" % now,  # one big datagram, one over-long line
    ]
    udp_target = ("127.0.0.1", config.plaintext_udp_port)
    good = socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10)
    endless = socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10)  # never a newline
    hostile = socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(GOOD_POINTS):
            good.sendall(b"h.good %d %d\n" % (i, base - 10 * i))
            endless.sendall(b"x" * 65536)  # 1.3 MB in all, no newline: dropped, counted once
            if i < len(tcp_bad):
                hostile.sendall(tcp_bad[i] + b"\n")
            if i < len(udp_bad):
                udp.sendto(udp_bad[i], udp_target)
            if i == 5:
                hostile.sendall(b"h.nan nan %d\n" % now)  # NaN: dropped silently, as carbon does
                udp.sendto(b"u.nan nan %d\nu.good 7 %d\nnot a line" % (now, base), udp_target)
            time.sleep(0.05)
        # a line cut off by the disconnect is refused, not stored truncated
        with socket.create_connection(("127.0.0.1", config.plaintext_port), timeout=10) as cut:
            cut.sendall(b"h.cut 12")
        assert still_open(good) and still_open(hostile) and still_open(endless)
        assert gateway.poll() is None

        # the good client's points all arrive, alongside the hostile ones
        expected = {base - 10 * i: float(i) for i in range(GOOD_POINTS)}
        start, end = base - 10 * GOOD_POINTS - 10, base + 10
        wait_for(lambda: render(stack, "h.good", start, end) == expected, 40,
                 "every point of the good TCP client", interval=0.5)
        wait_for(lambda: render(stack, "u.good", start, end) == {base: 7.0}, 20, "the good UDP point", interval=0.5)
        # and the same good connection still works after all that
        good.sendall(b"h.after 3 %d\n" % base)
        wait_for(lambda: render(stack, "h.after", start, end) == {base: 3.0}, 20, "a point after the storm",
                 interval=0.5)
    finally:
        for sock in (good, endless, hostile, udp):
            sock.close()

    # nothing malformed was stored under any name; NaN created no series
    assert {n["text"] for n in graphite_get(stack, "/metrics/find", query="h.*")} == {"good", "after"}
    assert {n["text"] for n in graphite_get(stack, "/metrics/find", query="u.*")} == {"good"}

    # counted: 10 TCP lines + the endless line + the cut line; 8 UDP lines + "not a line"
    tcp_count, udp_count = len(tcp_bad) + 2, len(udp_bad) + 1
    wait_for(lambda: total(stack, f"{AGENTS}.gateway.bad_lines_by_protocol.plaintext_tcp") == tcp_count, 20,
             f"{tcp_count} bad TCP lines in the gateway's self-metrics", interval=0.5)
    wait_for(lambda: total(stack, f"{AGENTS}.gateway.bad_lines_by_protocol.plaintext_udp") == udp_count, 20,
             f"{udp_count} bad UDP lines in the gateway's self-metrics", interval=0.5)
    assert total(stack, f"{AGENTS}.gateway.nan_dropped") == 2

    # and logged (rate-limited: the log adds up to the same total, with examples)
    def logged() -> int:
        counts = re.findall(r"(\d+) malformed input line", stack.log_path("gateway").read_text())
        return sum(map(int, counts))

    wait_for(lambda: logged() == tcp_count + udp_count, 20, "the bad lines in the gateway's log")
    assert gateway.poll() is None
    assert "Traceback" not in stack.log_path("gateway").read_text()
