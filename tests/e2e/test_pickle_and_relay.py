"""Carbon pickle on the running stack: frames of every protocol, an exploit refused, carbon-relay.

Every point is read back through graphite-web's render API with its exact value.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for
from tests.e2e.conftest import graphite_get
from tests.support.pickle_frames import encode_frame
from turok_core.parse.carbon_pickle import HEADER

STEP = 10  # the shipped default schema's base resolution
CARBON_RELAY = Path(sys.executable).parent / "carbon-relay.py"


@pytest.fixture(scope="module")
def base():
    """A 10 s-aligned time two minutes ago: its windows are long closed."""
    now = int(time.time())
    return now - now % STEP - 120


def render(stack, target: str, start: int, end: int) -> dict[int, float]:
    series = graphite_get(stack, "/render", target=target, format="json", **{"from": start, "until": end})
    return {t: v for s in series for v, t in s["datapoints"] if v is not None}


def wait_rendered(stack, expected: dict[str, dict[int, float]], start: int, end: int, timeout: float = 25):
    for target, points in expected.items():
        wait_for(lambda: render(stack, target, start, end) == points, timeout,
                 f"{target} = {points} in graphite-web", interval=0.3)


def connect(stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", stack.config.pickle_port), timeout=10)


def closed_by_peer(sock: socket.socket, timeout: float = 10) -> bool:
    """True once the gateway has closed ``sock`` (EOF or reset), False if it is still open."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def py2_frame(points) -> bytes:
    """A Python 2 client's protocol-2 frame: byte-string paths (SHORT_BINSTRING)."""
    body = b"\x80\x02]("
    for path, (stamp, value) in points:
        body += b"U" + bytes([len(path)]) + path + b"J" + struct.pack("<i", stamp)
        body += b"G" + struct.pack(">d", value) + b"\x86\x86"
    body += b"e."
    return HEADER.pack(len(body)) + body


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_frames_of_every_protocol_reach_graphite_web(stack, base):
    b = base
    top = "e2e_pickle.proto."
    stream = b""
    expected = {}
    for protocol in range(6):
        name = f"{top}p{protocol}"
        stream += encode_frame([(name, (b - 30, protocol + 0.25)), (name, (b - 19.3, -protocol * 1000))],
                               protocol=protocol)
        expected[name] = {b - 30: protocol + 0.25, b - 20: float(-protocol * 1000)}  # float stamp truncated
    raw = top.encode()
    stream += encode_frame([(raw + b"bytes", (b - 10, 7)), (raw + b"bytes", (b - 8, 9))], protocol=3)
    expected[top + "bytes"] = {b - 10: 8.0}  # two points in one slot: averaged
    stream += py2_frame([(raw + b"py2", (b - 40, 1e-3))])
    expected[top + "py2"] = {b - 40: 1e-3}
    # bad points next to good ones in one frame: only the good ones are stored
    mixed = top + "mixed"
    stream += encode_frame([(mixed, (b - 50, 5)), (mixed, (b - 40, float("nan"))), (mixed, (b - 30, float("inf"))),
                            ("e2e_pickle bad", (b, 1)), (mixed, (0, 1)), (mixed,)], protocol=4)
    expected[mixed] = {b - 50: 5.0}
    before = time.time()
    with connect(stack) as sock:
        for offset in range(0, len(stream), 100):  # frames cut across many TCP segments
            sock.sendall(stream[offset:offset + 100])
        sock.sendall(encode_frame([(top + "now", (-1, 4.5))], protocol=2))
    after = time.time()
    wait_rendered(stack, expected, b - 60, b + 60)

    # -1 is the gateway's now: one point, in the slot of the moment it was sent
    got = wait_for(lambda: render(stack, top + "now", b, int(after) + 60), 25, "the -1 point", interval=0.3)
    (stamp, value), = got.items()
    assert value == 4.5 and int(before) - int(before) % STEP <= stamp <= int(after)
    log = stack.log_path("gateway")
    # logged at most every 10 s (the exact counts are unit-tested)
    wait_for(lambda: re.search(r"malformed input line\(s\) ignored .*from pickle", log.read_text()), 15,
             "the bad points in the gateway's log")
    found = graphite_get(stack, "/metrics/find", query=top + "*")
    assert sorted(n["text"] for n in found) == ["bytes", "mixed", "now", "p0", "p1", "p2", "p3", "p4", "p5", "py2"]


def test_exploit_is_refused_and_the_gateway_keeps_serving(stack, base, tmp_path):
    b = base
    top = "e2e_pickle.safe."
    marker = tmp_path / "pwned"
    with connect(stack) as sock:
        sock.sendall(encode_frame([(top + "before", (b - 30, 1.5))])
                     + encode_frame([(top + "evil", (b - 30, 1)), Exploit(marker)], protocol=0))
        assert closed_by_peer(sock), "the gateway kept a connection that sent an exploit"
    for protocol in (2, 5):  # GLOBAL and STACK_GLOBAL flavours, each on its own connection
        with connect(stack) as sock:
            sock.sendall(encode_frame([Exploit(marker)], protocol=protocol))
            assert closed_by_peer(sock)

    with connect(stack) as sock:  # an oversized frame: dropped on its length prefix alone
        sock.sendall(HEADER.pack(stack.config.max_pickle_frame_bytes + 1))
        assert closed_by_peer(sock), "the gateway waited for the body of an oversized frame"
    with connect(stack) as sock:  # garbage frames are skipped, the connection stays
        sock.sendall(HEADER.pack(9) + b"\xffgarbage!" + encode_frame([(top + "after_garbage", (b - 20, 2))]))
        assert not closed_by_peer(sock, timeout=1)
    with connect(stack) as sock:  # a frame cut short by the client's close
        sock.sendall(encode_frame([(top + "truncated", (b - 20, 3))])[:-4])

    # still up: good pickle and plaintext input from new connections
    with connect(stack) as sock:
        sock.sendall(encode_frame([(top + "after", (b - 10, 4.25))], protocol=4))
    with socket.create_connection(("127.0.0.1", stack.config.plaintext_port), timeout=10) as sock:
        sock.sendall(f"{top}plaintext 6.5 {b - 10}\n".encode())
    wait_rendered(stack, {top + "before": {b - 30: 1.5}, top + "after_garbage": {b - 20: 2.0},
                          top + "after": {b - 10: 4.25}, top + "plaintext": {b - 10: 6.5}}, b - 60, b + 60)
    found = graphite_get(stack, "/metrics/find", query=top + "*")
    assert sorted(n["text"] for n in found) == ["after", "after_garbage", "before", "plaintext"]
    assert not marker.exists()
    log = stack.log_path("gateway")
    wait_for(lambda: "tries to run code" in log.read_text(), 10, "the refused exploit in the gateway's log")
    wait_for(lambda: "closed inside a pickle frame" in log.read_text(), 10, "the truncated frame in the log")
    assert "-byte limit; connection closed" in log.read_text() and "not a pickled list" in log.read_text()


def test_carbon_relay_forwards_to_the_pickle_port(stack, base, tmp_path):
    b = base
    top = "e2e_pickle.relay."
    line_port = free_port()
    conf = tmp_path / "conf"
    storage = tmp_path / "storage"
    conf.mkdir()
    storage.mkdir()
    (conf / "carbon.conf").write_text(f"""[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {free_port()}
RELAY_METHOD = consistent-hashing
DESTINATIONS = 127.0.0.1:{stack.config.pickle_port}
MAX_QUEUE_SIZE = 100000
MAX_DATAPOINTS_PER_MESSAGE = 500
CARBON_METRIC_INTERVAL = 0
STORAGE_DIR = {storage}
LOG_DIR = {storage}
PID_DIR = {storage}
""")
    # carbon's start-up reads a schemas file even for the relay, which stores nothing
    (conf / "storage-schemas.conf").write_text("[default]\npattern = .*\nretentions = 10s:1d\n")
    log = open(tmp_path / "relay.log", "wb")
    relay = subprocess.Popen(
        [sys.executable, str(CARBON_RELAY), f"--config={conf / 'carbon.conf'}", "--nodaemon",
         f"--pidfile={storage / 'relay.pid'}", f"--logdir={storage}", "start"],
        env={**os.environ, "GRAPHITE_ROOT": str(tmp_path)}, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        def relay_up():
            assert relay.poll() is None, (tmp_path / "relay.log").read_text()
            with socket.create_connection(("127.0.0.1", line_port), timeout=1):
                return True
        wait_for(relay_up, 20, "carbon-relay's line port")
        lines = [f"{top}cpu.user 12.5 {b - 50}", f"{top}cpu.user 13.75 {b - 40}",
                 f"{top}load.shortterm 0.07 {b - 50}", f"{top}disk.bytes 1234567 {b - 30}",
                 f"{top}disk.bytes -42 {b - 20}"]
        lines += [f"{top}many.m{i:03d} {i} {b - 10}" for i in range(600)]  # more than one pickle frame
        with socket.create_connection(("127.0.0.1", line_port), timeout=10) as sock:
            sock.sendall(("\n".join(lines) + "\n").encode())
        wait_rendered(stack, {top + "cpu.user": {b - 50: 12.5, b - 40: 13.75},
                              top + "load.shortterm": {b - 50: 0.07},
                              top + "disk.bytes": {b - 30: 1234567.0, b - 20: -42.0},
                              top + "many.m000": {b - 10: 0.0}, top + "many.m599": {b - 10: 599.0}},
                      b - 60, b + 60)
        wait_for(lambda: len(graphite_get(stack, "/metrics/find", query=top + "many.*")) == 600, 20,
                 "all 600 relayed names in the index", interval=0.3)
        series = graphite_get(stack, "/render", target=top + "many.*", format="json",
                              **{"from": b - 60, "until": b + 60})
        assert sorted((s["target"], [v for v, t in s["datapoints"] if v is not None]) for s in series) == \
            sorted((f"{top}many.m{i:03d}", [float(i)]) for i in range(600))
        found = graphite_get(stack, "/metrics/find", query=top + "{cpu,disk,load}.*", format="completer")
        assert sorted((n["path"], n["is_leaf"]) for n in found["metrics"]) == [
            (top + "cpu.user", "1"), (top + "disk.bytes", "1"), (top + "load.shortterm", "1")]
        assert relay.poll() is None
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(15)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
        log.close()
