"""Carbon pickle: frame cutting, safe unpickling, point decoding, and the gateway's receiver."""
from __future__ import annotations

import math
import os
import pickle
import resource
import struct
import time

import pytest
from twisted.internet.testing import StringTransport

from gateway.pickle_receiver import CarbonPickleFactory
from gateway.service import make_gateway_service
from tests.support.pickle_frames import encode_frame
from turok_core.model.config import TurokConfig
from turok_core.parse.batch import MAX_TIMESTAMP
from turok_core.parse.carbon_pickle import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    FrameReader,
    MalformedPickleError,
    UnsafePickleError,
    decode_frames,
    load_frame,
)

T0 = 1_700_000_000
NOW = 1_700_000_555.75


class Exploit:
    """Unpickled by a naive loader, this runs a shell command that creates ``marker``."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def py2_pickle(points, binary: bool) -> bytes:
    """What a Python 2 carbon client sends: byte-string paths (STRING / SHORT_BINSTRING opcodes)."""
    if not binary:  # protocol 0
        body = b"(l"
        for path, (stamp, value) in points:
            body += b"(S'%s'\n(I%d\nF%r\ntta" % (path, stamp, value)
        return body + b"."
    body = b"\x80\x02]("
    for path, (stamp, value) in points:
        body += b"U" + bytes([len(path)]) + path + b"J" + struct.pack("<i", stamp)
        body += b"G" + struct.pack(">d", value) + b"\x86\x86"
    return body + b"e."


def decode(points, protocol: int = 4, now: float = NOW, max_path_bytes: int = 0):
    return decode_frames([pickle.dumps(points, protocol=protocol)], now, max_path_bytes)


@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_decodes_exactly(protocol):
    points = [("a.b.c", (T0, 1)), ("a.b.d", (T0 + 10.9, 2.5)), ("x.y", (-1, -7)), ("x.ü", (T0, 1e300))]
    batch = decode(points, protocol)
    assert (batch.frames, batch.bad_frames, batch.unsafe) == (1, 0, "")
    parsed = batch.parsed
    assert parsed.names == ["a.b.c", "a.b.d", "x.y", "x.ü"]
    assert parsed.values == [1.0, 2.5, -7.0, 1e300]
    assert all(type(v) is float for v in parsed.values)
    assert parsed.timestamps == [T0, T0 + 10, int(NOW), T0]  # floats truncated, -1 is now
    assert (parsed.bad, parsed.nan_dropped) == (0, 0)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_bytes_paths_from_python3_clients(protocol):
    batch = decode([(b"b.one", (T0, 1.5)), (b"b.\xc3\xa9", (-1.0, 2))], protocol)
    assert batch.parsed.names == ["b.one", "b.é"]
    assert batch.parsed.values == [1.5, 2.0]
    assert batch.parsed.timestamps == [T0, int(NOW)]


@pytest.mark.parametrize("binary", [False, True])
def test_python2_byte_string_paths(binary):
    body = py2_pickle([(b"py2.a", (T0, 1.25)), (b"py2.b", (T0 + 20, -3.0))], binary)
    parsed = decode_frames([body], NOW).parsed
    assert parsed.names == ["py2.a", "py2.b"]
    assert parsed.values == [1.25, -3.0]
    assert parsed.timestamps == [T0, T0 + 20]


def test_bad_points_are_counted_and_good_ones_kept():
    good = [("ok.one", (T0, 1)), ("ok.two", ("1700000010", b"2.5"))]  # numeric strings: as carbon
    bad = [
        ("has space", (T0, 1)), ("tab\tx", (T0, 1)), ("new\nline", (T0, 1)), ("", (T0, 1)),
        (b"\xff\xfe.not.utf8", (T0, 1)), ("lone.\ud800", (T0, 1)), (42, (T0, 1)),
        ("inf.value", (T0, math.inf)), ("neg.inf", (T0, -math.inf)), ("huge.int", (T0, 10 ** 400)),
        ("str.value", (T0, "abc")), ("bool.value", (T0, True)), ("list.value", (T0, [1])),
        ("zero.ts", (0, 1)), ("neg.ts", (-2, 1)), ("frac.ts", (-1.5, 1)), ("small.ts", (0.5, 1)),
        ("far.ts", (MAX_TIMESTAMP + 1, 1)), ("inf.ts", (math.inf, 1)), ("nan.ts", (math.nan, 1)),
        ("a", (T0, 1, 2)), ("a", T0), ("ab",), "ab", 17, None, ("a", (T0,)),
    ]
    parsed = decode(good + [("nan.value", (T0, math.nan))] + bad).parsed
    assert parsed.names == ["ok.one", "ok.two"]
    assert parsed.values == [1.0, 2.5]
    assert parsed.timestamps == [T0, T0 + 10]
    assert parsed.nan_dropped == 1
    assert parsed.bad == len(bad)
    # paths refused by the metric-name rule (space, tab, newline, empty) are counted last
    assert parsed.bad_examples[0] == b"(b'\\xff\\xfe.not.utf8', (1700000000, 1)) (bad path)"


def test_fast_and_slow_paths_agree():
    points = [(f"m.{i % 7}", (T0 + i * 3.5, i * 0.25)) for i in range(2000)] + [("m.x", (-1, 9))]
    fast = decode(points).parsed
    slow = decode(points + [("bad path", (T0, 1))]).parsed  # one bad point: all go point by point
    assert slow.bad == 1
    assert (fast.names, fast.values, fast.timestamps) == (slow.names, slow.values, slow.timestamps)
    assert fast.timestamps[-1] == int(NOW) and fast.timestamps[1] == T0 + 3


def test_path_length_limit():
    parsed = decode([("a" * 100, (T0, 1)), ("b" * 101, (T0, 2)), ("é" * 51, (T0, 3))], max_path_bytes=100).parsed
    assert parsed.names == ["a" * 100]
    assert parsed.bad == 2  # 101 bytes, and 51 two-byte characters


@pytest.mark.parametrize("protocol", range(6))
def test_reduce_exploit_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([("a.b", (T0, 1)), Exploit(marker)], protocol=protocol)
    with pytest.raises(UnsafePickleError):
        load_frame(payload)
    batch = decode_frames([payload], NOW)
    assert "GLOBAL" in batch.unsafe
    assert len(batch.parsed) == 0
    assert not marker.exists()
    # the payload is real: an ordinary unpickler runs it
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Exploit(control), protocol=protocol))
    assert control.exists()


# hand-written pickles that reach for code through each opcode that can
CODE_PICKLES = {
    "GLOBAL+REDUCE": b"cos\nsystem\n(S'touch MARKER'\ntR.",
    "INST": b"(S'touch MARKER'\nios\nsystem\n.",
    "OBJ": b"(cos\nsystem\nS'touch MARKER'\no.",
    "STACK_GLOBAL": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x0ctouch MARKER\x85R.",
    "REDUCE on data": b"\x80\x02X\x03\x00\x00\x00abc)R.",
    "NEWOBJ": b"\x80\x02]q\x00)\x81.",
    "NEWOBJ_EX": b"\x80\x04]q\x00)}\x92.",
    "BUILD": b"\x80\x02]}b.",
    "EXT1": b"\x80\x02\x82\x01.",
    "EXT2": b"\x80\x02\x83\x01\x00.",
    "EXT4": b"\x80\x02\x84\x01\x00\x00\x00.",
    "PERSID": b"Pfoo\n.",
    "BINPERSID": b"\x80\x02X\x03\x00\x00\x00fooQ.",
}


@pytest.mark.parametrize("name", sorted(CODE_PICKLES))
def test_hand_written_code_opcodes_are_refused(tmp_path, name):
    marker = tmp_path / "marker"
    body = CODE_PICKLES[name].replace(b"MARKER", str(marker).encode())
    body = body.replace(b"\x0ctouch", bytes([len(b"touch " + str(marker).encode())]) + b"touch")
    with pytest.raises(UnsafePickleError):
        load_frame(body)
    assert decode_frames([body], NOW).unsafe
    assert not marker.exists()


def test_an_unsafe_frame_stops_the_batch(tmp_path):
    good = pickle.dumps([("g.one", (T0, 1))])
    evil = pickle.dumps([Exploit(tmp_path / "x")])
    batch = decode_frames([good, evil, pickle.dumps([("g.two", (T0, 2))])], NOW)
    assert batch.unsafe and batch.frames == 1
    assert batch.parsed.names == ["g.one"]
    assert not (tmp_path / "x").exists()


def test_malformed_frames_are_skipped():
    good = pickle.dumps([("m.ok", (T0, 5))], protocol=4)
    frames = [b"", b"garbage", good[:-5], b"\xff\xff\xff", pickle.dumps({"a": 1}), pickle.dumps(12),
              pickle.dumps("a.b 1 2"), b"\x80\x02]h\x07.", good]
    batch = decode_frames(frames, NOW)
    assert (batch.frames, batch.bad_frames, batch.unsafe) == (9, 8, "")
    assert batch.parsed.names == ["m.ok"]
    assert batch.bad_frame_example.startswith("0-byte frame:")
    with pytest.raises(MalformedPickleError):
        load_frame(b"garbage")


def test_a_tuple_of_points_is_accepted_like_a_list():
    assert decode_frames([pickle.dumps((("t.a", (T0, 1)),))], NOW).parsed.names == ["t.a"]


@pytest.mark.parametrize("body", [
    b"\x80\x02]r\x00\x00\x00\x04.",  # LONG_BINPUT at memo index 2**26: the C unpickler zeroes 1 GB
    b"(lp67108864\n.",  # PUT at the same index, protocol 0
    b"\x80\x02\x8e\x00\x00\x00\x00\x00\x00\x00\x40.",  # BINBYTES8 claiming 2**62 bytes
])
def test_memory_bombs_are_harmless(body):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    batch = decode_frames([body], NOW)
    assert time.monotonic() - started < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    assert batch.unsafe == "" and len(batch.parsed) == 0


def test_frame_reader_cuts_any_chunking():
    bodies = [pickle.dumps([(f"f.{i}", (T0, i))], protocol=i % 6) for i in range(6)] + [b""]
    stream = b"".join(HEADER.pack(len(body)) + body for body in bodies)
    for chunk in (1, 3, 7, len(stream)):
        reader = FrameReader()
        got = []
        for start in range(0, len(stream), chunk):
            got.extend(reader.feed(stream[start:start + chunk]))
        assert got == bodies and reader.pending == 0
    reader = FrameReader()
    assert reader.feed(stream[:10]) == []  # a header and the start of the first body
    assert reader.pending == 10


def test_frame_reader_refuses_oversize_from_the_prefix():
    reader = FrameReader(max_frame_bytes=1000)
    good = encode_frame([("a", (T0, 1))])
    assert reader.feed(good + HEADER.pack(1001)) == [good[4:]]  # earlier frames still delivered
    assert reader.oversize == 1001 and reader.pending == 0
    assert reader.feed(b"x" * 5000 + good) == []  # nothing after it is kept or cut
    assert reader.pending == 0
    assert FrameReader().max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 1 << 20
    exact = FrameReader(max_frame_bytes=len(good) - 4)
    assert exact.feed(good) == [good[4:]] and not exact.oversize


# --- the gateway's receiver (Twisted protocol on a string transport) ---------------------------

class Sink:
    def __init__(self) -> None:
        self.calls = []

    def __call__(self, parsed, source) -> None:
        self.calls.append((parsed, source))

    @property
    def names(self):
        return [name for parsed, _ in self.calls for name in parsed.names]


def connect(factory):
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def make_factory(**kwargs):
    sink = Sink()
    factory = CarbonPickleFactory(sink, lambda: NOW, **kwargs)
    return factory, sink


def test_receiver_decodes_all_frames_of_a_read_as_one_batch():
    factory, sink = make_factory()
    protocol, transport = connect(factory)
    stream = encode_frame([("r.a", (T0, 1))]) + encode_frame([("r.b", (-1, 2))], protocol=5)
    protocol.dataReceived(stream[:5])
    protocol.dataReceived(stream[5:])
    protocol.dataReceived(encode_frame([("r.c", (T0, 3)), ("bad path", (T0, 4))], protocol=0))
    assert sink.names == ["r.a", "r.b", "r.c"]
    assert len(sink.calls) == 2 and sink.calls[1][0].bad == 1  # passed on: the gateway counts bad input
    assert sink.calls[0][1].startswith("pickle ")
    assert (factory.counters.frames, factory.counters.points, factory.counters.bad_points) == (3, 3, 1)
    assert not transport.disconnecting


def test_receiver_keeps_the_connection_after_a_bad_frame():
    factory, sink = make_factory()
    protocol, transport = connect(factory)
    protocol.dataReceived(HEADER.pack(7) + b"garbage" + encode_frame([("after.bad", (T0, 1))]))
    assert sink.names == ["after.bad"]
    assert factory.counters.bad_frames == 1 and not transport.disconnecting


def test_receiver_closes_on_an_exploit(tmp_path):
    factory, sink = make_factory()
    protocol, transport = connect(factory)
    marker = tmp_path / "pwned"
    evil = HEADER.pack(0) + b""  # an empty frame first: bad, not fatal
    evil += encode_frame([("before", (T0, 1))]) + encode_frame([Exploit(marker)], protocol=0)
    protocol.dataReceived(evil + encode_frame([("after", (T0, 2))]))
    assert transport.disconnecting and transport.disconnected  # aborted
    protocol.dataReceived(encode_frame([("late", (T0, 3))]))  # bytes already in flight: ignored
    protocol.connectionLost(None)
    assert sink.names == ["before"]
    counters = factory.counters
    assert (counters.unsafe_frames, counters.connections_refused, counters.truncated_frames) == (1, 1, 0)
    assert not marker.exists()
    # another connection is served as usual
    other, other_transport = connect(factory)
    other.dataReceived(encode_frame([("next", (T0, 4))]))
    assert sink.names == ["before", "next"] and not other_transport.disconnecting


def test_receiver_drops_an_oversize_frame_before_its_body():
    factory, sink = make_factory(max_frame_bytes=4096)
    protocol, transport = connect(factory)
    protocol.dataReceived(encode_frame([("small", (T0, 1))]) + HEADER.pack(4097))
    assert transport.disconnecting and sink.names == ["small"]
    assert protocol._reader.pending == 0  # nothing of the big frame held
    assert (factory.counters.oversize_frames, factory.counters.connections_refused) == (1, 1)


def test_receiver_counts_a_frame_truncated_by_the_disconnect():
    factory, sink = make_factory()
    protocol, _ = connect(factory)
    frame = encode_frame([("cut", (T0, 1))])
    protocol.dataReceived(frame[:-2])
    protocol.connectionLost(None)
    assert factory.counters.truncated_frames == 1 and sink.names == []
    clean, _ = connect(factory)
    clean.dataReceived(frame)
    clean.connectionLost(None)
    assert factory.counters.truncated_frames == 1 and sink.names == ["cut"]


def test_gateway_listens_for_pickle(tmp_path):
    config = TurokConfig(pickle_port=12345, max_pickle_frame_bytes=5000, max_line_length=300)
    top = make_gateway_service(config)
    listener = top.getServiceNamed("pickle-tcp")
    port, factory = listener.args[:2]
    assert port == 12345 and listener.kwargs["interface"] == config.interface
    assert (factory.max_frame_bytes, factory.max_path_bytes) == (5000, 300)


def test_receiver_counters_join_the_gateway_self_metrics():
    top = make_gateway_service(TurokConfig())
    factory = top.getServiceNamed("pickle-tcp").args[1]
    protocol, transport = connect(factory)
    protocol.dataReceived(encode_frame([("good.a", (-1, 1)), ("bad path", (-1, 2))]) + HEADER.pack(7) + b"garbage")
    counters, _gauges = top.getServiceNamed("gateway").self_metrics()
    assert (counters["pickle.frames"], counters["pickle.bad_frames"], counters["pickle.bad_points"]) == (2, 1, 1)
    assert counters["bad_lines_by_protocol.pickle"] == 1  # a bad point is bad input like a bad line
    assert counters["statsd.packets_received"] == 0
