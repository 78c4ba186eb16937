"""Bounded fuzzing (hypothesis) of every parser that meets outside bytes.

Plaintext (``parse_plaintext``, ``StreamLines``), pickle (``load_frame``, ``decode_frames``),
StatsD (``StatsdAggregator.apply_datagram``/``flush``) and turokd's SQS body decoder (``decode_body``):
random and mutated valid input never raises anything but the module's documented error, the
output is well formed (parallel lists, finite values, timestamps in range, names the metric-name
rule leaves as they are) and memory stays bounded (tracemalloc peaks for large inputs). Every
test has a fixed example budget and no database, so the whole file runs in well under a minute.
"""
from __future__ import annotations

import base64
import json
import math
import pickle
import tracemalloc
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turok_core.model.message import MessageError, TurokMessage
from turok_core.model.metric_names import NameRule, check_stored, normalise
from turok_core.parse.batch import MAX_TIMESTAMP, ParsedLines
from turok_core.parse.carbon_pickle import (
    HEADER,
    FrameReader,
    MalformedPickleError,
    UnsafePickleError,
    decode_frames,
    load_frame,
)
from turok_core.parse.plaintext import StreamLines, parse_plaintext
from turok_core.statsd.parse import StatsdAggregator
from turok_core.statsd.settings import StatsdSettings
from turok_core.wire.codec import FLAG_RAW, FLAG_ZLIB, decode_body, encode_messages

NOW = 1_700_000_000
FUZZ = settings(max_examples=150, deadline=2000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_well_formed(parsed: ParsedLines) -> None:
    assert len(parsed.names) == len(parsed.values) == len(parsed.timestamps)
    assert parsed.bad >= 0 and parsed.nan_dropped >= 0 and len(parsed.bad_examples) <= 3
    assert all(type(value) is float and math.isfinite(value) for value in parsed.values)
    assert all(type(stamp) is int and 0 < stamp <= MAX_TIMESTAMP for stamp in parsed.timestamps)
    assert all(type(name) is str and normalise(name) == name for name in parsed.names)
    assert all(type(example) is bytes for example in parsed.bad_examples)


def peak_bytes(function, *args) -> int:
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- plaintext ---------------------------------------------------------------------------------

fragments = st.sampled_from([b"a.b", b"a..b", b".x", b"\xff", b"\xc3\xa9", b"*", b"\x00", b"1", b"-1", b"1.5",
                             b"nan", b"inf", b"-inf", b"1e400", b"1e9", b"0", b"253402300800", b"1700000000",
                             b"abc", b";k=v", b";", b"=", b"1_0"])
separators = st.sampled_from([b" ", b"  ", b"\t", b"", b"\r"])
line = st.lists(st.tuples(fragments, separators), max_size=5).map(lambda parts: b"".join(f + s for f, s in parts))
chunks = st.one_of(st.binary(max_size=600), st.lists(line, max_size=30).map(b"\n".join))


@FUZZ
@given(chunks, st.sampled_from([0, 8, 4096]))
def test_plaintext_chunks_parse_like_their_lines_one_by_one(chunk, max_line_length):
    parsed = parse_plaintext(chunk, NOW, max_line_length, NameRule())
    assert_well_formed(parsed)
    lines = [parse_plaintext(line, NOW, max_line_length, NameRule()) for line in chunk.split(b"\n")]
    assert parsed.names == [name for one in lines for name in one.names]
    assert parsed.values == [value for one in lines for value in one.values]
    assert parsed.timestamps == [stamp for one in lines for stamp in one.timestamps]
    assert (parsed.bad, parsed.nan_dropped) == (sum(one.bad for one in lines), sum(one.nan_dropped for one in lines))


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20), st.sampled_from([1, 16, 200]))
def test_stream_lines_hold_at_most_one_bounded_line(reads, limit):
    stream = StreamLines(limit)
    out = b""
    for data in reads:
        chunk = stream.feed(data)
        assert not chunk or chunk.endswith(b"\n")
        assert len(stream.pending) <= limit and b"\n" not in stream.pending
        out += chunk
    assert len(out) + len(stream.pending) <= sum(map(len, reads))


def test_plaintext_memory_is_bounded_for_large_input():
    endless = StreamLines(4096)
    # 32 MB without a newline: never more than one line limit held
    assert peak_bytes(lambda: [endless.feed(b"x" * 65536) for _ in range(512)]) < 1 << 20
    chunk = b"".join(b"servers.host%04d.cpu.%d %d.25 %d\n" % (i % 5000, i % 8, i, NOW) for i in range(50_000))
    assert peak_bytes(parse_plaintext, chunk, NOW, 4096, NameRule()) < 20 * len(chunk)  # ~2 MB in
    bad = b"".join(b"bad..name.%d* 1 %d\n" % (i, NOW) for i in range(50_000))
    assert peak_bytes(parse_plaintext, bad, NOW, 4096, NameRule()) < 40 * len(bad)  # the per-name path


# --- pickle --------------------------------------------------------------------------------------

def valid_points(draw_points):
    return [(name, (stamp, value)) for name, stamp, value in draw_points]


point_lists = st.lists(st.tuples(st.sampled_from(["a.b", "a..b", "x y", "", "é.ü", "m;k=v", "c.*"]),
                                 st.one_of(st.integers(-2, 2 ** 40), st.floats(allow_nan=True)),
                                 st.one_of(st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True))),
                       max_size=20).map(valid_points)
mutations = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                               st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6)


def mutate(data: bytes, edits) -> bytes:
    buffer = bytearray(data)
    for kind, position, byte in edits:
        at = position % (len(buffer) + 1)
        if kind == "flip" and at < len(buffer):
            buffer[at] ^= byte or 1
        elif kind == "insert":
            buffer[at:at] = bytes([byte])
        elif kind == "delete":
            del buffer[at:at + 1]
        elif kind == "truncate":
            del buffer[at:]
    return bytes(buffer)


def assert_frames_decode_safely(frames) -> None:
    for frame in frames:
        try:
            load_frame(frame)
        except (UnsafePickleError, MalformedPickleError):
            pass
    batch = decode_frames(frames, NOW, 4096, NameRule())
    assert_well_formed(batch.parsed)
    assert 0 <= batch.bad_frames <= batch.frames <= len(frames)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_random_bytes_never_escape_the_unpickler(frames):
    assert_frames_decode_safely(frames)


@FUZZ
@given(point_lists, st.integers(0, 5), mutations)
def test_mutated_valid_frames_never_escape_the_unpickler(points, protocol, edits):
    body = pickle.dumps(points, protocol=protocol)
    assert_frames_decode_safely([body, mutate(body, edits)])


@FUZZ
@given(point_lists, st.integers(0, 5))
def test_valid_frames_keep_exactly_the_points_the_rule_allows(points, protocol):
    parsed = decode_frames([pickle.dumps(points, protocol=protocol)], NOW, 4096, NameRule()).parsed
    assert_well_formed(parsed)
    assert len(parsed.names) + parsed.bad + parsed.nan_dropped == len(points)


class RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


@FUZZ
@given(st.integers(0, 5), st.sampled_from([RunsCode(), print, ValueError("x"), complex(1, 2), NameRule]),
       point_lists)
def test_pickles_that_load_or_call_code_are_refused(protocol, payload, points):
    body = pickle.dumps(points + [("evil", (NOW, payload))], protocol=protocol)
    batch = decode_frames([pickle.dumps(points, protocol=protocol), body], NOW)
    assert batch.unsafe and batch.frames == 1
    assert len(batch.parsed.names) + batch.parsed.bad + batch.parsed.nan_dropped == len(points)


def test_pickle_memory_is_bounded_for_hostile_frames():
    reader = FrameReader(1 << 20)
    assert reader.feed(HEADER.pack(1 << 31) + b"x" * 1000) == [] and reader.oversize == 1 << 31
    hostile = [
        b"\x80\x02r\x00\x00\x00@N.",  # LONG_BINPUT at memo index 2**30 (the C unpickler allocates GBs)
        b"\x80\x04\x8d" + (1 << 40).to_bytes(8, "little") + b"abc",  # BINUNICODE8 claiming a terabyte
        b"(" * 200_000 + b".",  # 200,000 marks
        b"\x80\x02]" + b"K\x01a" * 300_000 + b".",  # a list of 300,000 ints (900 KB)
    ]
    for frame in hostile:
        assert peak_bytes(decode_frames, [frame], NOW) < 64 * 1024 * 1024


# --- StatsD --------------------------------------------------------------------------------------

statsd_fragments = st.sampled_from(["a", "a.b", "a..b", ".", "x y", "/", "*", "é", ":", "|", "@", "#", ",", "1",
                                    "-1", "+2", "0.5", "nan", "inf", "1e400", "c", "g", "ms", "h", "s", "q",
                                    "|@0.1", "|@0", "|@-1", "|#k:v", "|#", ";", "="])
statsd_chunks = st.one_of(
    st.binary(max_size=400),
    st.lists(st.lists(statsd_fragments, max_size=8).map("".join), max_size=20).map(lambda ls: "\n".join(ls).encode()))


@FUZZ
@given(st.lists(statsd_chunks, max_size=4))
def test_statsd_never_raises_and_flushes_well_formed_points(chunks):
    aggregator = StatsdAggregator(StatsdSettings(max_line_length=100, histograms=()))
    for chunk in chunks:
        assert aggregator.apply_datagram(chunk) >= 0
    names, values = aggregator.flush()
    assert len(names) == len(values)
    assert all(math.isfinite(value) for value in values)
    assert all(normalise(name) == name for name in names)
    totals = aggregator.totals  # bad counts value parts ("m:1|c:x|c" has two), as etsy does
    assert totals.metrics_received >= 0 and totals.bad_lines_seen >= 0


def test_statsd_memory_is_bounded_by_distinct_keys():
    aggregator = StatsdAggregator()
    lines = b"\n".join(b"same.key.%d:1|c" % (i % 100) for i in range(50_000))
    assert peak_bytes(aggregator.apply_datagram, lines) < 8 * len(lines)


# --- turokd's SQS body decoder -------------------------------------------------------------------

def valid_bodies():
    messages = [TurokMessage("a.b", NOW - NOW % 10, [1.0, 2.5], 10, "average"),
                TurokMessage("c.d;k=v", NOW - NOW % 60, [3], 60, "sum")]
    return encode_messages(messages) + encode_messages(messages * 40)  # raw and zlib-compressed


VALID = valid_bodies()


def assert_decodes_or_refuses(body: str) -> None:
    try:
        messages = decode_body(body)
    except MessageError:
        return
    for message in messages:
        assert check_stored(message.metric) == message.metric
        assert message.resolution > 0 and message.start_time % message.resolution == 0
        assert message.datapoints and all(math.isfinite(v) for v in message.datapoints)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
                 st.binary(max_size=300).map(lambda b: base64.b64encode(FLAG_RAW + b).decode()),
                 st.binary(max_size=300).map(lambda b: base64.b64encode(FLAG_ZLIB + zlib.compress(b)).decode())))
def test_random_bodies_decode_or_raise_message_error(body):
    assert_decodes_or_refuses(body)


@FUZZ
@given(st.sampled_from(VALID), mutations, st.booleans())
def test_mutated_valid_bodies_decode_or_raise_message_error(body, edits, inside):
    if inside:  # mutate the envelope itself, then wrap it again as a well-formed body
        payload = base64.b64decode(body)
        flag, data = payload[:1], payload[1:]
        envelope = zlib.decompress(data) if flag == FLAG_ZLIB else data
        body = base64.b64encode(FLAG_RAW + mutate(envelope, edits)).decode()
    else:
        body = mutate(body.encode(), edits).decode("latin-1")
    assert_decodes_or_refuses(body)


JSON_BODY = ('{"metric": %s, "start_time": "14-11-2023 22:13:20", "datapoints": "[1]", "resolution": "10sec", '
             '"aggregation_type": "sum"}')


@FUZZ
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), st.integers(0, 4))
def test_json_bodies_with_any_metric_name(name, shape):
    text = JSON_BODY % json.dumps(name)
    assert_decodes_or_refuses([text, "[" + text + "]", text[:shape * 20], text.replace("10sec", name[:5]),
                               text + name][shape])
