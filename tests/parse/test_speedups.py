"""The C extension (``turok_core.parse._speedups``) against the pure-Python parsers it accelerates.

The extension only ever takes the clean input and answers None for anything else, so for every
input the gateway's result must be exactly what the pure-Python code gives: same names, values
(to the bit), timestamps, bad-line counts and examples, same loaded pickles, same refusals.
Generated input (hypothesis, bounded) mixes clean lines with every kind of trouble.
"""
from __future__ import annotations

import contextlib
import math
import pickle
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.parse.test_parsers_fuzz import mutate, mutations
from turok_core.model.metric_names import NameRule
from turok_core.parse import carbon_pickle, native, plaintext
from turok_core.parse.carbon_pickle import MalformedPickleError, UnsafePickleError, decode_frames, load_frame
from turok_core.parse.plaintext import parse_plaintext
from turok_core.statsd import parse as statsd_parse
from turok_core.statsd.settings import StatsdSettings

NOW = 1_700_000_000
CHECKS = settings(max_examples=300, deadline=2000, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_extension_is_built_here():
    """`make install` builds it; without it the gateway still works, only slower (native.py)."""
    assert native.speedups is not None, native.describe()
    assert native.describe() == "C speedups"


@contextlib.contextmanager
def pure_python():
    saved = plaintext._native, carbon_pickle._native, statsd_parse._native
    plaintext._native = carbon_pickle._native = statsd_parse._native = None
    try:
        yield
    finally:
        plaintext._native, carbon_pickle._native, statsd_parse._native = saved


def both(function, *args):
    """(result with the extension, result of the pure-Python code)"""
    fast = function(*args)
    with pure_python():
        return fast, function(*args)


def same_floats(left, right) -> bool:
    return len(left) == len(right) and all(
        type(a) is type(b) is float and struct.pack("<d", a) == struct.pack("<d", b) for a, b in zip(left, right))


def assert_same_parse(fast, slow) -> None:
    assert fast.names == slow.names and fast.timestamps == slow.timestamps
    assert same_floats(fast.values, slow.values)
    assert all(type(stamp) is int for stamp in fast.timestamps)
    assert (fast.bad, fast.bad_examples, fast.nan_dropped) == (slow.bad, slow.bad_examples, slow.nan_dropped)


# --- plaintext -----------------------------------------------------------------------------------

names = st.sampled_from([b"a.b", b"servers.web01.cpu", b"a..b", b".a", b"a.", b"x*", b"\xc3\xa9.b", b"a;k=v",
                         b"\xff", b"a\x00b", b"A-Z_0~9", b"x" * 252, b"y" * 40])
decimals = st.builds(lambda v, places: b"%.*f" % (places, v), st.floats(-1e12, 1e12), st.integers(0, 17))
values = st.one_of(decimals, st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).encode()),
                   st.integers(-10 ** 20, 10 ** 20).map(lambda v: b"%d" % v),
                   st.sampled_from([b"1_0", b"1e5", b"-0", b"+.5", b"5.", b".", b"-", b"0x10", b"1e400", b"1.5e-320",
                                    b"0.000000000000000000001", b"00012.50", b"9007199254740993", b"NaN", b"-inf"]))
stamps = st.one_of(st.integers(-3, 2 ** 38).map(lambda v: b"%d" % v),
                   st.sampled_from([b"-1", b"+1700000000", b"1700000000.9", b"1.7e9", b"0", b"253402300800",
                                    b"1_700_000_000", b"99999999999999999999", b"abc"]))
spaces = st.sampled_from([b" ", b"  ", b"\t", b" \r", b"\x0b"])
lines = st.one_of(st.tuples(names, spaces, values, spaces, stamps).map(b"".join),
                  st.sampled_from([b"", b"   ", b"a.b 1", b"a.b 1 2 3", b"\r"]))
chunks = st.lists(lines, max_size=25).map(b"\n".join)
clean_lines = st.tuples(st.sampled_from([b"a.b", b"servers.web01.cpu", b"q-1_z~"]), decimals,
                        st.integers(1, 2 ** 33).map(lambda v: b"%d" % v)).map(b" ".join)


@CHECKS
@given(chunks, st.sampled_from([0, 30, 4096]), st.sampled_from([1024, 50]))
def test_plaintext_chunks_parse_as_the_python_parser_does(chunk, max_line_length, max_name_bytes):
    rule = NameRule(max_name_bytes)
    assert_same_parse(*both(parse_plaintext, chunk, NOW, max_line_length, rule))


@CHECKS
@given(st.lists(clean_lines, min_size=1, max_size=40).map(b"\n".join), st.booleans())
def test_clean_chunks_are_taken_by_the_extension(chunk, crlf):
    chunk = chunk.replace(b"\n", b"\r\n") if crlf else chunk + b"\n"
    assert native.speedups.parse_lines(chunk, NOW, 0, 1024) is not None
    assert_same_parse(*both(parse_plaintext, chunk, NOW, 0, NameRule()))


def test_decimals_convert_exactly_as_float_does():
    tricky = [b"0.1", b"0.3", b"123456789012345", b"1234567890123456", b"0.000001", b"2.675", b"-0.0",
              b"999999999999999.9", b"4.35", b"1.0000000000000002", b"0.1000000000000000055511151231257827"]
    parsed = parse_plaintext(b"".join(b"a.b %s 5\n" % text for text in tricky), NOW)
    assert same_floats(parsed.values, [float(text) for text in tricky])
    assert math.copysign(1, parsed.values[6]) == -1


def test_a_bad_line_sends_the_chunk_to_the_python_parser_and_keeps_the_good_lines():
    chunk = b"a.b 1 100\nnot a line at all\nc.d 2 -1\n"
    assert native.speedups.parse_lines(chunk, NOW, 0, 1024) is None
    parsed = parse_plaintext(chunk, NOW)
    assert (parsed.names, parsed.values, parsed.timestamps, parsed.bad) == (["a.b", "c.d"], [1.0, 2.0], [100, NOW], 1)


# --- pickle --------------------------------------------------------------------------------------

paths = st.one_of(st.sampled_from(["a.b", "servers.web01.cpu", "a..b", "x y", "", "é.ü", "m;k=v", "c.*", "z" * 300]),
                  st.sampled_from([b"a.b", b"x..y", b"\xff"]))
numbers = st.one_of(st.integers(-2, 2 ** 40), st.floats(allow_nan=True, allow_infinity=True), st.just(True),
                    st.just("12"), st.just(None), st.integers(2 ** 1100, 2 ** 1101))
points = st.lists(st.one_of(st.tuples(paths, st.tuples(numbers, numbers)),
                            st.tuples(paths, st.lists(numbers, min_size=2, max_size=2)),
                            st.sampled_from([("a.b",), "ab", 5, ("a.b", (1, 2, 3))])), max_size=20)
clean_points = st.lists(st.tuples(st.sampled_from(["a.b", "servers.web01.cpu", "q-1_z~"]),
                                  st.tuples(st.one_of(st.integers(1, 2 ** 33), st.floats(1, 2 ** 33), st.just(-1)),
                                            st.one_of(st.integers(-2 ** 60, 2 ** 60), st.floats(-1e300, 1e300)))),
                        min_size=1, max_size=40)


def loaded(frame: bytes):
    try:
        return "ok", repr(load_frame(frame))
    except UnsafePickleError:
        return "unsafe", None
    except MalformedPickleError:
        return "malformed", None


@CHECKS
@given(points, st.integers(0, 5))
def test_pickled_points_decode_as_the_python_decoder_does(items, protocol):
    frame = pickle.dumps(items, protocol=protocol)
    fast, slow = both(decode_frames, [frame], NOW, 200, NameRule())
    assert_same_parse(fast.parsed, slow.parsed)
    assert (fast.frames, fast.bad_frames, fast.unsafe) == (slow.frames, slow.bad_frames, slow.unsafe)


@CHECKS
@given(clean_points, st.integers(0, 5))
def test_clean_frames_take_the_c_unpickler_and_columns(items, protocol):
    frame = pickle.dumps(items, protocol=protocol)
    # protocols 0 and 1 write large ints as text (LONG), which is left to the Python unpickler
    assert native.speedups.pickle_is_plain(frame) or protocol < 2
    assert native.speedups.pickle_columns(pickle.loads(frame), NOW, 0, 1024) is not None
    fast, slow = both(decode_frames, [frame], NOW, 0, NameRule())
    assert_same_parse(fast.parsed, slow.parsed)
    assert len(fast.parsed.names) == len(items)


@CHECKS
@given(clean_points, st.integers(0, 5), mutations)
def test_mutated_frames_load_or_fail_as_with_the_safe_unpickler(items, protocol, edits):
    frame = mutate(pickle.dumps(items, protocol=protocol), edits)
    fast, slow = both(loaded, frame)
    # a C/Python difference in a garbage frame's error message does not matter, its kind does
    assert fast == slow


@pytest.mark.parametrize("frame", [
    b"\x80\x02r\x00\x00\x00@N.",          # LONG_BINPUT at memo index 2**30: the C memo would be 8 GB
    b"\x80\x02]p1073741824\n.",            # PUT (text): protocol 0 is left to Python
    b"cos\nsystem\n(S'true'\ntR.",         # GLOBAL + REDUCE
    b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.",  # STACK_GLOBAL
    b"\x80\x02}q\x00.",                   # a dict: left to the Python unpickler
    b"\x80\x02]q\x00",                    # no STOP
    b"\x80\x02X\xff\xff\xff\x7fab.",       # a string longer than the frame
])
def test_frames_the_c_unpickler_must_not_load(frame):
    assert native.speedups.pickle_is_plain(frame) is False
    assert loaded(frame) == both(loaded, frame)[1]


def test_carbon_relay_style_frames_are_plain():
    items = [(f"servers.web{i:03d}.cpu", (NOW + i, i * 0.5)) for i in range(1000)]  # past BINPUT's 255
    for protocol in range(1, 6):  # protocol 0's text opcodes are left to the Python unpickler
        assert native.speedups.pickle_is_plain(pickle.dumps(items, protocol=protocol)), protocol


# --- StatsD --------------------------------------------------------------------------------------

statsd_keys = st.sampled_from(["a.b", "api.req", "x y", "a/b", "é", "k;t=1", "a|b", "", "..", "q" * 300])
statsd_values = st.one_of(st.sampled_from(["1", "-1", "+2", "0", "-0", "1.5", "1_0", "nan", "inf", "1e400", "",
                                           " 1", "3.", ".5", "1e3", "0x1", "abc"]),
                          st.floats(-1e6, 1e6).map(repr))
statsd_kinds = st.sampled_from(["c", "ms", "h", "g", "s", "x", " c", "c\r", "C"])
statsd_rates = st.sampled_from(["", "|@0.5", "|@0.1", "|@0", "|@-1", "|@abc", "|@1_0", "|@", "|0.5", "|@ 0.5",
                                "|@1e400", "|@0.5|x", "|#t:1"])
statsd_lines = st.one_of(
    st.tuples(statsd_keys, statsd_values, statsd_kinds, statsd_rates).map(lambda p: f"{p[0]}:{p[1]}|{p[2]}{p[3]}"),
    st.sampled_from(["", "a.b", "a.b:1|c:2|c", "a.b:1", ":1|c", "\u00e9.x:1|c", "a.b:1|c|@0.5|#t:1"]))
statsd_datagrams = st.lists(st.lists(statsd_lines, max_size=20).map("\n".join).map(str.encode)
                            | st.binary(max_size=40), min_size=1, max_size=6)


def statsd_state(aggregator) -> tuple:
    floats = lambda mapping: {key: repr(value) for key, value in mapping.items()}  # noqa: E731
    return (floats(aggregator.counters), {k: list(map(repr, v)) for k, v in aggregator.timers.items()},
            floats(aggregator.timer_counts), floats(aggregator.gauges), aggregator.sets,
            aggregator.metrics_received, aggregator.bad_lines_seen, aggregator.bad_examples,
            list(aggregator.counters), list(aggregator.timers), list(aggregator.gauges))


def run_statsd(datagrams) -> tuple:
    aggregator = statsd_parse.StatsdAggregator(StatsdSettings(max_line_length=60))
    for datagram in datagrams:
        aggregator.apply_datagram(datagram)
    state = statsd_state(aggregator)
    flushed = [(name, repr(value)) for name, value in zip(*aggregator.flush())
               if not name.endswith("processing_time")]  # a duration: differs run to run
    return state, flushed


@CHECKS
@given(statsd_datagrams)
def test_statsd_datagrams_apply_as_the_python_aggregator_does(datagrams):
    fast, slow = both(run_statsd, datagrams * 2)  # twice: the second time every key is known
    assert fast == slow


def test_clean_statsd_datagrams_are_taken_by_the_extension():
    aggregator = statsd_parse.StatsdAggregator()
    datagram = b"\n".join(b"app.c%d:%d|c|@0.5\napp.t%d:%d.5|ms\napp.g%d:-%d|g" % (i, i, i, i, i, i)
                          for i in range(20))
    aggregator.apply_datagram(datagram)  # keys seen first by the Python code, which sanitises them
    keys = aggregator._keys
    offset, applied = native.speedups.statsd_apply(datagram, keys, aggregator.counters, aggregator.timers,
                                                   aggregator.timer_counts, aggregator.gauges, 0)
    assert (offset, applied) == (len(datagram), 60)
    assert aggregator.counters["app.c3"] == 12.0 and aggregator.timers["app.t2"] == [2.5, 2.5]
