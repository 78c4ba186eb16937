"""Version 2 envelopes read in C (``_envelope.groups``) against the msgpack reference in codec.py.

The C side takes on only envelopes the reference accepts and gives the same columns; anything else
it leaves to the reference (None). Compared here on random envelopes (every msgpack width of ints,
float32, huge integers, ±0.0, subnormals, names holding the separator or non-ASCII text, windows
of several values) and on broken ones (truncated at every byte, bytes flipped, wrong types,
keys repeated or unknown, trailing bytes): same columns, or the same error.
"""
from __future__ import annotations

import base64
import math
import random
import struct
from array import array

import msgpack
import pytest

from turok_core.model.aggregation import AGGREGATION_TYPES
from turok_core.model.message import MessageError, TurokMessage
from turok_core.wire import codec
from turok_core.wire.codec import Column, decode_columns, encode_messages

C = codec.native  # the tests below set codec.native to None for the reference
native = pytest.mark.skipif(C is None, reason="turok_core.wire._envelope not built")
T0 = 1396362900


def body_of(envelope: bytes) -> str:
    return base64.b64encode(b"\x00" + envelope).decode()


def exact(values) -> object:
    """Values with their types and every bit (-0.0 is not 0.0, array('d') is not a list)."""
    if isinstance(values, array):
        return ("array", values.typecode, values.tobytes())
    return [exact(v) if isinstance(v, list) else (type(v).__name__, struct.pack("<d", v)) for v in values]


def outcome(body: str, use_c: bool, monkeypatch, max_name_bytes=None) -> object:
    monkeypatch.setattr(codec, "native", C if use_c else None)
    try:
        columns = decode_columns(body, max_name_bytes)
    except MessageError as exc:
        return ("error", str(exc))
    assert all(type(column) is Column for column in columns)
    return [(c.slot, type(c.slot), c.step, type(c.step), c.aggregation, c.names, exact(c.values)) for c in columns]


def same(body: str, monkeypatch, max_name_bytes=None) -> object:
    c = outcome(body, True, monkeypatch, max_name_bytes)
    reference = outcome(body, False, monkeypatch, max_name_bytes)
    assert c == reference
    return c


def random_name(rng: random.Random) -> str:
    parts = [rng.choice(["servers", "web", "cpu", "é", "日本", "x" * rng.randint(1, 40), "a b", "\u2028"])
             for _ in range(rng.randint(1, 5))]
    return ".".join(parts)


def random_number(rng: random.Random) -> object:
    return rng.choice([
        rng.randint(-128, 127), rng.randint(-2 ** 15, 2 ** 15), rng.randint(-2 ** 31, 2 ** 32),
        rng.randint(-2 ** 63, 2 ** 63 - 1), rng.randint(2 ** 63, 2 ** 64 - 1), 2 ** 53 + 1, -(2 ** 63),
        0, -0.0, 0.0, 5e-324, -2.2250738585072014e-308, 1.7976931348623157e308, rng.uniform(-1e9, 1e9),
        round(rng.uniform(0, 100), 2), rng.random(),
    ])


def random_group(rng: random.Random) -> list:
    step = rng.choice([1, 10, 60, 3600, 86400])
    slot = rng.randint(-10, 10 ** 7) * step
    count = rng.randint(1, 40)
    names = [random_name(rng) for _ in range(count)]
    several = rng.random() < 0.3
    values = [[random_number(rng) for _ in range(rng.randint(1, 5))] if several and rng.random() < 0.5
              else random_number(rng) for _ in range(count)]
    joined = "\n".join(names) if rng.random() < 0.8 else names
    return [slot, step, rng.choice(AGGREGATION_TYPES), joined, values]


def pack(envelope: object, rng: random.Random) -> bytes:
    # float32 for some floats: msgpack writes them only when asked to (and when they fit one)
    if rng.random() < 0.2:
        try:
            return msgpack.packb(envelope, use_single_float=True, use_bin_type=True)
        except OverflowError:
            pass
    return msgpack.packb(envelope, use_bin_type=True)


@native
@pytest.mark.parametrize("seed", range(60))
def test_random_envelopes_are_read_in_c_as_the_reference_reads_them(seed, monkeypatch):
    rng = random.Random(seed)
    groups = [random_group(rng) for _ in range(rng.randint(1, 6))]
    envelope = {"v": 2, "groups": groups} if rng.random() < 0.7 else {"groups": groups, "v": 2}
    data = pack(envelope, rng)
    assert C.groups(data, AGGREGATION_TYPES) is not None  # taken on in C, not left over
    result = same(body_of(data), monkeypatch)
    assert result[0] != "error"


@native
def test_bodies_of_the_encoder_give_arrays_of_doubles_in_c(monkeypatch):
    messages = [TurokMessage(f"a.b{i}", T0 - T0 % 10, [float(i) + 0.25], 10, "sum") for i in range(5000)]
    messages += [TurokMessage(f"c.d{i}", T0 - T0 % 10, [1.0, 2.5, -0.0], 10, "last") for i in range(50)]
    for body in encode_messages(messages, 65536):
        for column in same(body, monkeypatch):
            assert column[-1][0] == "array" or any(isinstance(v, list) for v in column[-1])
        payload = base64.b64decode(body)
        import zlib
        data = zlib.decompress(payload[1:]) if payload[:1] == b"\x01" else payload[1:]
        assert C.groups(data, AGGREGATION_TYPES) is not None


BROKEN = [
    {"v": 2, "groups": [[T0, 20, "sum", "a", [1]]], "extra": 1},
    {"v": 2.0, "groups": [[T0, 20, "sum", "a", [1]]]},
    {"v": 1, "groups": [[T0, 20, "sum", "a", [1]]]},
    {"v": True, "groups": []},
    {"v": 2},
    {"groups": []},
    {"v": 2, "groups": [[T0, 20, "sum", [], []]]},  # an empty group: the reference accepts it
    {"v": 2, "groups": [[2 ** 63, 1, "sum", "a", [1]]]},  # a slot past 64 signed bits
    {"v": 2, "groups": [[T0, -20, "sum", "a", [1]]]},
    {"v": 2, "groups": [[float(T0), 20, "sum", "a", [1]]]},
    {"v": 2, "groups": [[T0, True, "sum", "a", [1]]]},
    {"v": 2, "groups": [[T0, 20, b"sum", "a", [1]]]},
    {"v": 2, "groups": [[T0, 20, "sum", b"a", [1]]]},
    {"v": 2, "groups": [[T0, 20, "sum", [b"a"], [1]]]},
    {"v": 2, "groups": [[T0, 20, "sum", "a", [None]]]},
    {"v": 2, "groups": [[T0, 20, "sum", "a", [[1, [2]]]]]},
    {"v": 2, "groups": [[T0, 20, "sum", "a", [[1, True]]]]},
    {"v": 2, "groups": [[T0, 20, "sum", "a\nb", [1, [2, float("-inf")]]]]},
    {"v": 2, "groups": [[T0, 20, "sum", "a\nb", [1, float("nan")]]]},
    {"v": 2, "groups": [[T0, 20, "sum", "a", 1]]},
    {"v": 2, "groups": [[T0, 20, "sum", "a", [1]], "x"]},
    {"v": 2, "groups": {"a": 1}},
    {"v": 2, "groups": [[T0, 20, "sum", "a", [1], 0]]},
    {2: 2, "groups": []},
]


@native
@pytest.mark.parametrize("envelope", BROKEN, ids=range(len(BROKEN)))
def test_envelopes_the_c_code_is_not_sure_of_are_left_to_the_reference(envelope, monkeypatch):
    data = msgpack.packb(envelope, use_bin_type=True)
    assert C.groups(data, AGGREGATION_TYPES) is None
    same(body_of(data), monkeypatch)


@native
@pytest.mark.parametrize("envelope", [
    {"v": 2, "groups": []},
    {"v": 2, "groups": [[T0, 20, "sum", "a", [2 ** 64 - 1]]]},
    {"v": 2, "groups": [[-(2 ** 63), 1, "sum", "a", [1]]]},
    {"v": 2, "groups": [[2 ** 63 - 1, 1, "sum", ["a\nb", "c"], [1, [-0.0]]]]},
])
def test_edges_the_c_code_takes_on(envelope, monkeypatch):
    data = msgpack.packb(envelope, use_bin_type=True)
    assert C.groups(data, AGGREGATION_TYPES) is not None
    same(body_of(data), monkeypatch)


def handmade(parts: list[bytes]) -> bytes:
    return b"".join(parts)


@native
@pytest.mark.parametrize("data", [
    # a key repeated: msgpack keeps the last; the C code leaves it
    handmade([b"\x83", msgpack.packb("v"), msgpack.packb(2), msgpack.packb("groups"), msgpack.packb([]),
              msgpack.packb("v"), msgpack.packb(3)]),
    msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a", [1]]]}) + b"\x00",  # trailing bytes
    msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a", [1]]]})[:-1],  # truncated
    msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a\xff", [1]]]}).replace(b"a\xc3\xbf", b"a\xff\xfe"),
    msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "ab\ncd", [1, 2]]]}).replace(b"b\ncd", b"\xc3\ncd"),
    msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "\u00e9\nb", [1, 2]]]}).replace(b"\xc3\xa9", b"\xed\xa0"),
    b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 billion items
    b"\x82\xa1v\x02\xa6groups\xdd\x7f\xff\xff\xff",
    b"\x82\xa1v\x02\xa6groups\x91\x95\x00\x0a\xa3sum\xdb\xff\xff\xff\xff",  # a name longer than the data
    b"\x82\xa1v\x02\xa6groups\x91\x95\x00\x0a\xa3sum\xa1a\xdd\x00\x00\x00\x01\xcb\x00",  # a double cut short
    b"",
])
def test_broken_envelopes_are_left_to_the_reference(data, monkeypatch):
    assert C.groups(data, AGGREGATION_TYPES) is None
    same(body_of(data), monkeypatch)


@native
@pytest.mark.parametrize("seed", range(8))
def test_every_truncation_and_flipped_byte_gives_the_reference_outcome(seed, monkeypatch):
    rng = random.Random(1000 + seed)
    groups = [random_group(rng) for _ in range(2)]
    data = pack({"v": 2, "groups": groups}, rng)
    for cut in range(len(data)):
        same(body_of(data[:cut]), monkeypatch)
    for _ in range(300):
        broken = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        same(body_of(bytes(broken)), monkeypatch)


@native
def test_huge_integers_round_to_the_nearest_double_as_float_does(monkeypatch):
    values = [2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63 + 1025, 2 ** 64 - 1, -(2 ** 63), -(2 ** 53) - 1, 2 ** 62 + 513]
    data = msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "\n".join(f"m{i}" for i in range(len(values))),
                                               values]]})
    (column,) = C.groups(data, AGGREGATION_TYPES)
    assert [struct.pack("<d", v) for v in column[4]] == [struct.pack("<d", float(v)) for v in values]
    same(body_of(data), monkeypatch)


@native
def test_a_window_of_several_values_makes_the_group_a_list(monkeypatch):
    data = msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", "a\nb\nc", [1.5, [2, -0.0], 3]]]})
    (column,) = same(body_of(data), monkeypatch)
    assert column[-1] == exact([1.5, [2.0, -0.0], 3.0])
    assert math.copysign(1, C.groups(data, AGGREGATION_TYPES)[0][4][1][1]) == -1


@native
@pytest.mark.parametrize("names", ["ab\n\u00e9\u00e9", ["ab", "\u00e9\u00e9"], "abcd\nx", ["x", "abcd"]])
def test_a_name_past_max_name_bytes_is_refused_alike(names, monkeypatch):
    data = msgpack.packb({"v": 2, "groups": [[T0, 20, "sum", names, [1, 2]]]})
    assert C.groups(data, AGGREGATION_TYPES, 4) is not None
    assert C.groups(data, AGGREGATION_TYPES, 3) is None
    assert same(body_of(data), monkeypatch, 4)[0] != "error"
    assert same(body_of(data), monkeypatch, 3) == ("error", "metric name of 4 characters is too long to store"
                                                   if "abcd" in str(names) else
                                                   "metric name of 2 characters is too long to store")
