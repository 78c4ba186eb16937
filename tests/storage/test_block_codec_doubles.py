"""Block format v2's split doubles (codec 0x08, ``turok_core.storage.block_codec_doubles``) and C's twin.

Noisy full-precision doubles take codec 0x08 (sign, exponent below the block's top, raw mantissa)
where it is smaller than XOR; every double but NaN round-trips to the bit through it, in C as in
the reference, and C writes the reference's bytes; blocks of integers, decimals and their rollups
keep the bytes they had before codec 0x08 (tests/data); broken 0x08 blobs are refused alike.
"""
from __future__ import annotations

import json
import math
import random
from array import array
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.block_blobs import (
    CHECKS,
    IMPLS,
    SPECIAL,
    bits,
    doubles,
    doubles_blob,
    expected,
    need_c,
    split_blob,
    values_header,
    values_offset,
    xor_blob,
)
from turok_core.storage import block_codec, native
from turok_core.storage.block_codec_doubles import SPLIT_ESCAPE
from turok_core.storage.writes import item_size
from turok_core.turokd.rollup import rollup_known

NAME = "servers.host-0042.application-frontend.requests.http_2xx.count_per_interval.total"
SUBNORMALS = [5e-324, -5e-324, 2.225073858507201e-308, 1e-310]
HUGE = [1.7976931348623157e308, -1.7976931348623157e308, 2.0 ** 1000, 1e300]


def codecs() -> list:
    need_c()
    return [block_codec, native.blockcodec]


def signs_and_top(blob: bytes) -> tuple[int, int]:
    """Codec 0x08's sign mode and top exponent field (the 13 bits after the codec byte)."""
    offset = values_offset(blob)
    assert blob[offset] == 0x08
    head = int.from_bytes(blob[offset + 1:offset + 3], "big")
    return head >> 14, head >> 3 & 0x7FF


def noisy(rng: random.Random, n: int, low: float = 0.0, high: float = 1000.0) -> list[Optional[float]]:
    return [rng.uniform(low, high) for _ in range(n)]


def sprinkled(rng: random.Random, values: list, extras: list, count: int) -> list:
    out = list(values)
    for _ in range(count):
        out[rng.randrange(len(out))] = rng.choice(extras)
    return out


EDGE_BLOCKS = {
    "one value": [123.456],
    "zeros of both signs": [0.0, -0.0, 0.0, -0.0],
    "zeros only": [0.0] * 5,
    "negative zeros only": [-0.0] * 5,
    "subnormals": SUBNORMALS,
    "infinities": [math.inf, -math.inf, math.inf],
    "inf among doubles": [1.5, math.inf, 2.75, -math.inf],
    "huge": HUGE,
    "negative only": [-rng_value for rng_value in doubles(random.Random(2), 40)],
    "mixed signs": noisy(random.Random(3), 60, -1e6, 1e6),
    "exponents 7 and 8 below the top": [2.0 ** 10 + 0.5, 2.0 ** 3 + 0.25, 2.0 ** 2 + 0.125, 2.0 ** -100],
    "every special": SPECIAL,
    "gaps and specials": [None, 1.0, None, None, -0.0, 5e-324, None, math.inf, None],
    "all exponent fields": [math.ldexp(1.0 + i / 4096, e) for i, e in enumerate(range(-1074, 1024, 7))],
}


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("values", list(EDGE_BLOCKS.values()), ids=list(EDGE_BLOCKS))
def test_split_doubles_round_trip_every_kind_of_double(codec, values):
    """Forced through codec 0x08 (whichever codec the encoder would take), every double comes back
    to the bit, with decode and with decode_into; the encoder's own choice round-trips too."""
    blob = split_blob(values)
    assert values_header(blob)[0] == 0x08
    assert bits(codec.decode(blob)) == bits(expected(values))
    row = array("d", [-7.25]) * (len(values) + 2)
    codec.decode_into(blob, row, 1)
    assert bits([v for i, v in enumerate(row[1:-1]) if values[i] is not None]) == \
        bits([v for v in values if v is not None])
    assert bits(codec.decode(codec.encode(values))) == bits(expected(values))


def test_the_bits_of_a_split_block_are_the_grammar():
    """signs:2 top:11, then per value the exponent (d ones and a zero, or 8 ones and the field),
    the 52 mantissa bits; a sign bit per value only when signs are mixed."""
    blob = split_blob([1.5, 0.75, 2.0 ** -20])  # fields 1023, 1022, 1003: d = 0, 1, 20 (escaped)
    stream = ("00" + format(1023, "011b")
              + "0" + "1" + "0" * 51
              + "10" + "1" + "0" * 51
              + "1" * SPLIT_ESCAPE + format(1003, "011b") + "0" * 52)
    stream += "0" * (-len(stream) % 8)
    assert blob[values_offset(blob):] == b"\x08" + int(stream, 2).to_bytes(len(stream) // 8, "big")
    assert signs_and_top(split_blob([-1.5, -0.75])) == (1, 1023)
    assert signs_and_top(split_blob([-1.5, 0.75])) == (2, 1023)
    assert signs_and_top(split_blob([0.0, -0.0])) == (2, 0)
    assert signs_and_top(split_blob([math.inf])) == (0, 0x7FF)
    mixed = split_blob([-1.5, 0.75])
    stream = "10" + format(1023, "011b") + "1" + "0" + "1" + "0" * 51 + "0" + "10" + "1" + "0" * 51
    stream += "0" * (-len(stream) % 8)
    assert mixed[values_offset(mixed):] == b"\x08" + int(stream, 2).to_bytes(len(stream) // 8, "big")


@pytest.mark.parametrize("codec", IMPLS)
def test_noisy_doubles_take_split_doubles_and_fit_three_write_units(codec):
    """bench/cost.py's doubles (uniform 0-1000): a 432-slot block was 3,142 bytes as XOR, 4 write
    units; codec 0x08 stores it in ~2,930 bytes, an item of 3 write units."""
    rng = random.Random(21)
    for _ in range(5):
        values = doubles(rng, 432)
        blob = codec.encode(values)
        assert values_header(blob)[0] == 0x08 and blob == split_blob(values)
        assert len(blob) <= 2950 < 3100 <= len(xor_blob(values))
        assert item_size(NAME, 1_795_478_400, blob) <= 3 * 1024 < item_size(NAME, 1_795_478_400, xor_blob(values))
        assert bits(codec.decode(blob)) == bits(values)
    minutes = [rollup_known(doubles(rng, 6), 6, "average", 0.0) for _ in range(360)]  # turokd's 1-minute averages
    assert values_header(codec.encode(minutes))[0] == 0x08
    assert signs_and_top(codec.encode(noisy(rng, 300, -1e9, 1e9)))[0] == 2
    assert signs_and_top(codec.encode(noisy(rng, 300, -1e3, -1e-3)))[0] == 1
    # zeros, subnormals and negative values among noisy doubles: escaped exponents, still 0x08, exact
    values = sprinkled(rng, doubles(rng, 432), [None, 0.0, -0.0, *SUBNORMALS, -3.5, -1e-200], 40)
    blob = codec.encode(values)
    assert values_header(blob)[0] == 0x08 and signs_and_top(blob)[0] == 2
    assert bits(codec.decode(blob)) == bits(expected(values))
    # an inf or a huge value sets the top far above the rest, whose exponents all escape: XOR
    for extra in (math.inf, HUGE[0]):
        values = doubles(rng, 432)
        values[7] = extra
        blob = codec.encode(values)
        assert values_header(blob)[0] == 0x04 and bits(codec.decode(blob)) == bits(values)


@pytest.mark.parametrize("codec", IMPLS)
def test_xor_keeps_what_it_stores_smaller(codec):
    """Repeated or slowly changing doubles, and single values, stay XOR: the encoder takes the
    smallest, a tie going to the older codec."""
    rng = random.Random(22)
    steady = [math.sqrt(2)] * 200
    slow = [math.pi] * 100 + [math.e] * 100
    for values in (steady, slow, [math.pi], [1.0, -0.0], [2.0 ** 53 + 2]):
        blob = codec.encode(values)
        assert values_header(blob)[0] == 0x04 and len(blob) <= len(split_blob(values))
    values = noisy(rng, 100)
    assert len(split_blob(values)) < len(xor_blob(values)) and codec.encode(values) == split_blob(values)


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=200))
@CHECKS
def test_property_split_doubles_round_trip_in_c_as_in_the_reference(values):
    """Any doubles (NaN a gap): forced through codec 0x08 both read them back to the bit; the
    encoder's own choice is the same bytes in C and the smallest of XOR and 0x08 when no q fits."""
    want = bits(expected(values))
    blob = block_codec.encode(values)
    c = codecs()[1]
    assert c.encode(values) == blob
    assert c.encode(array("d", [math.nan if v is None else v for v in values])) == blob
    if not any(v is not None and v == v for v in values):
        return
    forced = split_blob(values)
    for codec in codecs():
        assert bits(codec.decode(forced)) == bits(codec.decode(blob)) == want
        rows = [[-7.25] * (len(values) + 4) for _ in range(2)]
        codec.decode_into(forced, rows[0], 2)
        codec.decode_into(blob, rows[1], 2)
        assert bits(rows[0]) == bits(rows[1])
    if values_header(blob)[0] in (0x04, 0x08):
        assert blob == doubles_blob(values)


@pytest.mark.parametrize("seed", range(30))
def test_c_writes_the_reference_bytes_for_noisy_blocks(seed):
    """Noisy doubles over random ranges (some lognormal: exponents far below the top, escaped),
    with gaps and special doubles sprinkled in: C's bytes are the reference's, and the smallest."""
    rng = random.Random(seed)
    for _ in range(6):
        n = rng.choice([1, 2, 7, 90, 360, 432])
        if rng.random() < 0.3:
            values = [rng.lognormvariate(0, rng.choice([1, 5, 30])) * rng.choice([1, -1]) for _ in range(n)]
        else:
            low = rng.uniform(-1e3, 1e3) * 10.0 ** rng.randint(-5, 8)
            values = noisy(rng, n, low, low + abs(low) * rng.uniform(0.01, 3) + 1e-9)
        values = sprinkled(rng, values, [None, math.nan, *SPECIAL, *SUBNORMALS, *HUGE], rng.randint(0, n // 4 + 1))
        blob = block_codec.encode(values)
        c = codecs()[1]
        assert c.encode(values) == blob
        assert bits(c.decode(blob)) == bits(block_codec.decode(blob)) == bits(expected(values))
        if expected(values) and values_header(blob)[0] not in (0x01, 0x02, 0x03):  # else k / q exactly
            assert len(blob) <= min(len(xor_blob(values)), len(split_blob(values)))


SPLIT_HEAD = b"\x02\x01\x00\x01\x08"  # version, n = 1, one run of one value, codec 0x08


def split_bits(stream: str) -> bytes:
    return SPLIT_HEAD + int(stream + "0" * (-len(stream) % 8), 2).to_bytes((len(stream) + 7) // 8, "big")


ONE = "00" + format(1023, "011b")  # sign mode 0, top field 1023 (1.0's)


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("blob, want", [
    (split_bits(ONE + "0" + "0" * 52), [1.0]),
    (split_bits(ONE + "10" + "1" + "0" * 51), [0.75]),
    (split_bits(ONE + "1" * 8 + format(1015, "011b") + "0" * 52), [2.0 ** -8]),  # the highest escaped field
    (split_bits("01" + format(1023, "011b") + "0" + "0" * 52), [-1.0]),  # all negative
    (split_bits("10" + format(0, "011b") + "1" + "0" + "0" * 52), [-0.0]),  # a sign bit each
    (split_bits("00" + format(0x7FF, "011b") + "0" + "0" * 52), [math.inf]),
    (split_bits("11" + format(1023, "011b") + "0" + "0" * 52), "refused"),  # sign mode 3
    (split_bits("00" + format(0, "011b") + "10" + "0" * 52), "refused"),  # one below field 0
    (split_bits(ONE + "1" * 8 + format(1016, "011b") + "0" * 52), "refused"),  # escaped, but unary codes it
    (split_bits(ONE + "1" * 8 + format(2000, "011b") + "0" * 52), "refused"),  # escaped above the top
    (split_bits("00" + format(0x7FF, "011b") + "0" + "0" * 51 + "1"), "refused"),  # a NaN
    (split_bits(ONE + "0" + "0" * 51)[:-1], "refused"),  # mantissa cut short
    (split_bits(ONE + "1111"), "refused"),  # unary cut short
    (split_bits(ONE + "11111111" + "0101"), "refused"),  # escaped field cut short
    (split_bits(ONE)[:-1], "refused"),  # header cut short
    (SPLIT_HEAD, "refused"),  # nothing after the codec byte
    (split_bits(ONE + "0" + "0" * 52) + b"\x00", "refused"),  # a byte after the values
])
def test_hand_made_split_blobs(codec, blob, want):
    try:
        got = bits(codec.decode(blob))
    except ValueError:
        got = "refused"
    assert got == (want if want == "refused" else bits(want))


@given(st.binary(max_size=16), st.data())
@CHECKS
def test_broken_split_blobs_are_refused_alike(garbage, data):
    """Codec 0x08 blobs cut short, extended or with a bit flipped: C and the reference both refuse
    them (ValueError, no crash, no read past the end), or both read the same slots."""
    rng = random.Random(data.draw(st.integers(0, 2 ** 32)))
    values = sprinkled(rng, noisy(rng, data.draw(st.integers(1, 30)), -50, 1000), [None, 0.0, -0.0, 5e-324], 3)
    blob = split_blob(values) if expected(values) else block_codec.encode(values)
    cut = data.draw(st.integers(0, len(blob)))
    flipped = bytearray(blob)
    flipped[data.draw(st.integers(1, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    for candidate in (blob[:cut], blob + garbage, bytes(flipped)):
        outcomes = []
        for codec in codecs():
            row = array("d", [-7.25]) * 40
            try:
                outcomes.append((bits(codec.decode(candidate)), codec.decode_into(candidate, row, 2), bits(row)))
            except ValueError:
                outcomes.append("refused")
        assert len(set(map(repr, outcomes))) == 1, candidate


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("codec_byte", [0x00, 0x09, 0x0A, 0x10, 0x80, 0xFF])
def test_unknown_codecs_are_refused_loudly(codec, codec_byte):
    """What a reader before codec 0x08 did with a split block ("unknown values codec 8"), this
    one does with any codec it does not know."""
    with pytest.raises(ValueError, match=f"unknown values codec {codec_byte}$"):
        codec.decode(b"\x02\x01\x00\x01" + bytes([codec_byte]) + b"\x00" * 12)


GOLDEN = json.loads((Path(__file__).parent.parent / "data" / "block_v2_before_split.json").read_text())["blocks"]


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("block", GOLDEN, ids=[block["what"] for block in GOLDEN])
def test_blocks_written_before_codec_8_read_and_keep_their_bytes(codec, block):
    """Blobs the codec wrote before 0x08 existed (tests/data, commit e5dc579) read as they did;
    scaled integers (0x01-0x03) and corrections (0x05-0x07) are written with the same bytes, XOR
    blocks too unless codec 0x08 is smaller (full-precision doubles, averages no ``q`` fits)."""
    values = [None if v is None else float.fromhex(v) for v in block["values"]]
    old = bytes.fromhex(block["blob"])
    assert bits(codec.decode(old)) == bits(expected(values))
    new = codec.encode(values)
    if values_header(old)[0] == 0x04 and new != old:
        assert new == split_blob(values) and len(new) < len(old)
    else:
        assert new == old
    if "full-precision doubles" in block["what"] or "twelve" in block["what"]:
        assert values_header(new)[0] == 0x08
