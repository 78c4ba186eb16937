"""Carbon plaintext parsing (fast and per-line paths) and the TCP stream line splitter."""
from __future__ import annotations

import math

import pytest

from turok_core.parse.batch import BAD_EXAMPLE_BYTES, MAX_BAD_EXAMPLES, MAX_TIMESTAMP, ParsedLines
from turok_core.parse.plaintext import StreamLines, parse_plaintext

NOW = 1_700_000_000.7


def points(parsed: ParsedLines):
    return list(zip(parsed.names, parsed.values, parsed.timestamps))


def test_good_lines():
    parsed = parse_plaintext(b"a.b 1 1600000000\nc.d -2.5 1600000010\ne 1e3 1600000020\n", NOW)
    assert points(parsed) == [("a.b", 1.0, 1600000000), ("c.d", -2.5, 1600000010), ("e", 1000.0, 1600000020)]
    assert (parsed.bad, parsed.nan_dropped, parsed.bad_examples) == (0, 0, [])
    assert all(type(t) is int for t in parsed.timestamps)


def test_empty_input_and_blank_lines():
    assert points(parse_plaintext(b"", NOW)) == []
    parsed = parse_plaintext(b"\n\n  \n\r\na 1 1600000000\n\n", NOW)
    assert points(parsed) == [("a", 1.0, 1600000000)]
    assert parsed.bad == 0


def test_crlf_tabs_and_final_line_without_newline():
    parsed = parse_plaintext(b"a 1 1600000000\r\nb\t2\t1600000001\r\nc  3   1600000002", NOW)
    assert points(parsed) == [("a", 1.0, 1600000000), ("b", 2.0, 1600000001), ("c", 3.0, 1600000002)]
    assert parsed.bad == 0


def test_minus_one_timestamp_means_now():
    parsed = parse_plaintext(b"a 1 -1\nb 2 1600000000\nc 3 -1.0\n", NOW)
    assert points(parsed) == [("a", 1.0, int(NOW)), ("b", 2.0, 1600000000), ("c", 3.0, int(NOW))]


def test_float_timestamps_are_truncated():
    parsed = parse_plaintext(b"a 1 1600000000.9\nb 2 1.6e9\nc 3 1600000005\n", NOW)
    assert points(parsed) == [("a", 1.0, 1600000000), ("b", 2.0, 1600000000), ("c", 3.0, 1600000005)]


def test_nan_values_are_dropped_not_bad():
    parsed = parse_plaintext(b"a nan 1600000000\nb 2 1600000000\nc NaN 1600000000\n", NOW)
    assert points(parsed) == [("b", 2.0, 1600000000)]
    assert (parsed.nan_dropped, parsed.bad) == (2, 0)


def test_unicode_names():
    parsed = parse_plaintext("temp.zürich 21.5 1600000000\n".encode(), NOW)
    assert points(parsed) == [("temp.zürich", 21.5, 1600000000)]


@pytest.mark.parametrize("line", [
    b"only.two 1",
    b"four fields 1 1600000000",
    b"a.b notanumber 1600000000",
    b"a.b 1 notatime",
    b"a.b inf 1600000000",
    b"a.b -inf 1600000000",
    b"a.b 1 0",
    b"a.b 1 -5",
    b"a.b 1 0.5",
    b"a.b 1 -1.5",
    b"a.b 1 nan",
    b"a.b 1 inf",
    b"a.b 1 %d" % (MAX_TIMESTAMP + 1),
    b"\xff\xfe.bad 1 1600000000",
    b"lonely",
])
def test_each_kind_of_bad_line_is_counted_and_good_lines_survive(line):
    data = b"good.one 1 1600000000\n" + line + b"\ngood.two 2 1600000010\n"
    parsed = parse_plaintext(data, NOW)
    assert points(parsed) == [("good.one", 1.0, 1600000000), ("good.two", 2.0, 1600000010)]
    assert parsed.bad == 1
    assert parsed.bad_examples == [line]
    # the same line alone (so the fast path sees only it) is refused the same way
    alone = parse_plaintext(line + b"\n", NOW)
    assert (points(alone), alone.bad) == ([], 1)


def test_bad_examples_are_few_and_truncated():
    long_bad = b"x" * 1000 + b" y"
    data = b"\n".join([long_bad] + [b"bad%d" % i for i in range(10)] + [b"ok 1 1600000000"])
    parsed = parse_plaintext(data, NOW)
    assert parsed.bad == 11
    assert len(parsed.bad_examples) == MAX_BAD_EXAMPLES
    assert parsed.bad_examples[0] == long_bad[:BAD_EXAMPLE_BYTES] + b"..."
    assert points(parsed) == [("ok", 1.0, 1600000000)]


def test_max_line_length_makes_longer_lines_bad():
    long_line = b"a." + b"x" * 100 + b" 1 1600000000"
    parsed = parse_plaintext(long_line + b"\nshort 2 1600000000\n", NOW, max_line_length=50)
    assert points(parsed) == [("short", 2.0, 1600000000)]
    assert parsed.bad == 1
    assert parsed.bad_examples[0].endswith(b"(115 bytes, over the 50-byte line limit)")
    assert points(parse_plaintext(long_line, NOW)) == [("a." + "x" * 100, 1.0, 1600000000)]


def test_fast_and_slow_paths_agree():
    good = b"".join(b"m.%d %d.25 %d\n" % (i, i, 1600000000 + i) for i in range(200))
    fast = parse_plaintext(good, NOW)
    slow = parse_plaintext(good + b"bad line\n", NOW)
    assert points(fast) == points(slow)
    assert (fast.bad, slow.bad) == (0, 1)
    assert all(math.isfinite(v) for v in fast.values)


def test_huge_values_overflowing_the_sum_are_kept():
    parsed = parse_plaintext(b"a 1e308 1600000000\nb 1e308 1600000000\n", NOW)
    assert points(parsed) == [("a", 1e308, 1600000000), ("b", 1e308, 1600000000)]


# --- StreamLines --------------------------------------------------------------------------------

def test_stream_lines_keeps_partial_tail_across_feeds():
    lines = StreamLines(100)
    assert lines.feed(b"a 1 16000") == b""
    assert lines.pending == b"a 1 16000"
    assert lines.feed(b"00000\nb 2 1600") == b"a 1 1600000000\n"
    assert lines.feed(b"000000\n") == b"b 2 1600000000\n"
    assert lines.pending == b""
    assert lines.feed(b"c 3 1600000000\nd 4 1600000000\n") == b"c 3 1600000000\nd 4 1600000000\n"
    assert lines.discarded == 0


def test_stream_lines_byte_by_byte():
    lines = StreamLines(100)
    data = b"a 1 1600000000\r\nb 2 -1\n"
    out = b"".join(lines.feed(data[i:i + 1]) for i in range(len(data)))
    assert out == data
    assert points(parse_plaintext(out, NOW)) == [("a", 1.0, 1600000000), ("b", 2.0, int(NOW))]


def test_stream_lines_discards_over_long_line_until_newline():
    lines = StreamLines(20)
    assert lines.feed(b"ok 1 1600000000\n" + b"x" * 15) == b"ok 1 1600000000\n"
    assert lines.feed(b"y" * 10) == b""  # 25 bytes without newline: over the limit
    assert lines.discarded == 1
    assert lines.discarded_example == b"x" * 15 + b"y" * 10
    assert lines.pending == b""
    for _ in range(50):  # the client keeps going: memory stays bounded
        assert lines.feed(b"z" * 1000) == b""
        assert len(lines.pending) == 0
    assert lines.discarded == 1
    assert lines.feed(b"zzz\nnext 2 1600000000\n") == b"next 2 1600000000\n"
    assert lines.feed(b"again 3 1600000000\n") == b"again 3 1600000000\n"
    assert lines.discarded == 1


def test_stream_lines_discards_over_long_tail_of_a_chunk():
    lines = StreamLines(10)
    assert lines.feed(b"a 1 2\n" + b"q" * 11) == b"a 1 2\n"
    assert lines.discarded == 1
    assert lines.feed(b"rest\nb 2 3\n") == b"b 2 3\n"


def test_drop_out_of_range_keeps_order_and_counts_the_rest():
    parsed = parse_plaintext(b"a 1 100\nb 2 50\nc 3 300\nd 4 200\n", 0)
    assert parsed.drop_out_of_range(100, 200) == 2
    assert (parsed.names, parsed.values, parsed.timestamps) == (["a", "d"], [1.0, 4.0], [100, 200])
    assert parsed.bad == 2 and parsed.bad_examples[0].startswith(b"b 2.0 50 (timestamp outside")
    assert parsed.drop_out_of_range(0, 1000) == 0
