"""Block format v2 (``turok_core.storage.block_codec`` and its C twin ``_blockcodec``).

Round trips must be exact to the bit for every double but NaN (a gap); the C codec must write the
very bytes of the reference and read every blob as it does, refusing the same broken ones; v1
blocks (msgpack lists) and the design's JSON still read; the sizes stay what the format is for.
"""
from __future__ import annotations

import json
import math
import random
import struct
from array import array
from pathlib import Path
from typing import Optional

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.block_blobs import (
    CHECKS,
    IMPLS,
    SPECIAL,
    bits,
    cost_counters,
    counters,
    doubles,
    doubles_blob,
    expected,
    gauges,
    need_c,
    rollups,
    split_blob,
    values_header,
    xor_blob,
)
from turok_core.model.aggregation import aggregate
from turok_core.model.extensions import load_extension
from turok_core.model.resolution import SECONDS_PER_DAY
from turok_core.storage import block_codec, native
from turok_core.storage.block_layout import AUTO_SLOTS, block_span, decode_datapoints, decode_into, encode_datapoints
from turok_core.storage.writes import item_size
from turok_core.turokd.rollup import rollup_known


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("values", [
    [], [None], [None, None, math.nan], [7.0], [None, None, -3.5], [-0.0], [0.0, -0.0, 0.0],
    [1.5, None, 3, None, None], SPECIAL, [None, *SPECIAL, None] * 3,
    [float(2 ** 53 + 2 * i) for i in range(20)], [2.0 ** 62, 1.0, -(2.0 ** 62)],
    [5e-324 * i for i in range(10)], [12.34, 56.78, None, 0.01, -99.99], [1e-9, 2e-9, 123456.789],
    [math.pi * i for i in range(50)], [1.0] * 100, [None] * 50 + [1.0],
])
def test_round_trips_exactly(codec, values):
    assert bits(codec.decode(codec.encode(values))) == bits(expected(values))


@pytest.mark.parametrize("codec", IMPLS)
def test_value_kinds_choose_their_codec(codec):
    rng = random.Random(3)
    assert codec.encode([]) == codec.encode([None, math.nan]) == b"\x02\x00"  # no value: version and n only
    assert codec.encode(counters(rng, 100))[4] in (0x01, 0x02, 0x03)  # after version, n and one run pair
    gauge_blob = codec.encode(gauges(rng, 100))
    assert gauge_blob[4] in (0x01, 0x02, 0x03) and gauge_blob[5] == 2  # scale 2: hundredths
    assert codec.encode(doubles(rng, 100))[4] == 0x08  # split doubles (XOR before codec 0x08)
    assert codec.encode([1.0, -0.0])[4] == 0x04  # -0.0 is no scaled integer
    assert codec.encode([2.0 ** 53 + 2])[4] == 0x04  # beyond 2**53: XOR, still exact


@pytest.mark.parametrize("seed", range(40))
def test_c_writes_the_reference_bytes_and_reads_them_alike(seed):
    need_c()
    rng = random.Random(seed)
    kinds = [counters, cost_counters, gauges, doubles]
    for _ in range(10):
        n = rng.choice([1, 2, 3, 10, 90, 432])
        kind = rng.choice(kinds)
        values: list[Optional[float]] = list(kind(rng, n))
        for _ in range(rng.randint(0, n)):  # gaps, and now and then any other value
            values[rng.randrange(n)] = rng.choice([None, math.nan, None, rng.choice(SPECIAL)])
        blob = block_codec.encode(values)
        assert native.blockcodec.encode(values) == blob
        assert native.blockcodec.encode(array("d", [math.nan if v is None else v for v in values])) == blob
        assert bits(native.blockcodec.decode(blob)) == bits(block_codec.decode(blob)) == bits(expected(values))


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(-2 ** 60, 2 ** 60).map(float),
                          st.integers(-10 ** 6, 10 ** 6).map(lambda k: k / 100)), max_size=300))
@CHECKS
def test_property_round_trip_and_c_matches_reference(values):
    blob = block_codec.encode(values)
    assert bits(block_codec.decode(blob)) == bits(expected(values))
    if native.blockcodec is not None:
        assert native.blockcodec.encode(values) == blob
        assert bits(native.blockcodec.decode(blob)) == bits(expected(values))


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(-10 ** 6, 10 ** 6).map(lambda k: k / 100)), max_size=300),
       st.integers(0, 400), st.integers(-320, 420))
@CHECKS
def test_decode_into_places_values_like_decode_and_c_matches_reference(values, length, offset):
    """A reader's row gets each value at offset + slot; gaps and slots outside the row keep what
    the row held (here a marker), in C exactly as in the reference."""
    blob = block_codec.encode(values)
    marker = -7.25
    want = [marker] * length
    for index, value in enumerate(block_codec.decode(blob)):
        if value is not None and 0 <= offset + index < length:
            want[offset + index] = value
    for codec in [block_codec] + ([native.blockcodec] if native.blockcodec is not None else []):
        row = [marker] * length
        codec.decode_into(blob, row, offset)
        assert bits(row) == bits(want)
        row = [marker] * length
        decode_into(memoryview(blob), row, offset)  # block_layout's, as reads use it
        assert bits(row) == bits(want)
        doubles = array("d", [marker]) * length  # as turokd unpacks a held coarse block
        codec.decode_into(blob, doubles, offset)
        assert bits(doubles) == bits(want)


@given(st.binary(max_size=64), st.data())
@CHECKS
def test_broken_blobs_are_refused_alike_by_decode_into(garbage, data):
    values = data.draw(st.lists(st.one_of(st.none(), st.floats(allow_nan=False)), max_size=40))
    blob = block_codec.encode(values)
    cut = data.draw(st.integers(0, len(blob)))
    for candidate in (blob[:cut], blob + garbage[:1], b"\x02" + garbage):
        outcomes = []
        for codec in [block_codec] + ([native.blockcodec] if native.blockcodec is not None else []):
            row = [None] * 50
            try:
                codec.decode_into(candidate, row, 3)
                outcomes.append(bits(row))
            except ValueError:
                outcomes.append("refused")
        assert len(set(map(repr, outcomes))) == 1, candidate


def test_decode_into_reads_v1_and_design_json_blocks():
    row: list = [None] * 5
    decode_into(msgpack.packb([1.5, None, 2.0]), row, 1)
    decode_into(json.dumps([5.0, None, None, 9.0]), row, -1)  # slot -1 is outside the row
    assert row == [None, 1.5, 9.0, 2.0, None]


@given(st.binary(max_size=64), st.data())
@CHECKS
def test_broken_blobs_are_refused_alike(garbage, data):
    """Truncated, extended and random blobs: both raise ValueError, or both read the same slots."""
    values = data.draw(st.lists(st.one_of(st.none(), st.floats(allow_nan=False)), max_size=40))
    blob = block_codec.encode(values)
    cut = data.draw(st.integers(0, len(blob)))
    for candidate in (blob[:cut], blob + garbage[:1], b"\x02" + garbage, garbage):
        outcomes = []
        for codec in [block_codec] + ([native.blockcodec] if native.blockcodec is not None else []):
            try:
                outcomes.append(bits(codec.decode(candidate)))
            except ValueError:
                outcomes.append("refused")
        assert len(set(map(repr, outcomes))) == 1, candidate


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("blob", [
    b"\x02\x01\x00\x01\x01\x00" + b"\xff" * 9 + b"\x01\x00",  # base -2**63, width 0: out of range
    b"\x02\x01\x00\x01\x01\x0a\x00\x00",  # scale 10
    b"\x02\x01\x00\x01\x01\x50\x00\x00",  # divisor index 5
    b"\x02\x02\x00\x02\x02\x00\x00\x00\x00",  # order 1 with a width-0 residual: fine, both 0.0
    b"\x02\x02\x00\x01",  # runs short of n
    b"\x02\x01\x00\x01\x04" + b"\x00" * 7,  # XOR value cut short
    b"\x02\x00\x00",  # bytes after an empty block
    b"\x02" + b"\xff" * 11,  # varint beyond 64 bits
])
def test_hand_made_blobs(codec, blob):
    try:
        got = codec.decode(blob)
    except ValueError:
        got = "refused"
    assert got == ([0.0, 0.0] if blob.startswith(b"\x02\x02\x00\x02\x02") else "refused")


def test_v1_msgpack_and_design_json_still_read():
    v1 = msgpack.packb([1.5, None, 3, 2.0 ** 60], use_bin_type=True)
    assert v1[0] == 0x94 and decode_datapoints(v1) == [1.5, None, 3, 2.0 ** 60]
    long_v1 = msgpack.packb([float(i) for i in range(300)], use_bin_type=True)  # array16 marker
    assert long_v1[0] == 0xDC and decode_datapoints(long_v1) == [float(i) for i in range(300)]
    assert decode_datapoints(json.dumps([1, None, 30000])) == [1, None, 30000]
    assert decode_datapoints(memoryview(encode_datapoints([None, 2.5]))) == [None, 2.5]
    assert encode_datapoints([1.5, None, 3, None, None])[0] == block_codec.VERSION
    with pytest.raises(ValueError):
        decode_datapoints(12)


@pytest.mark.parametrize("codec", IMPLS)
def test_rollup_averages_of_integers_are_scaled_integers(codec):
    """turokd's averages of 6 (10 s → 1 min; 5 where a slot is missing), 12 or 60 integer slots: k / q exactly."""
    rng = random.Random(4)
    for over, gap_every in ((6, 7), (12, 0), (60, 0)):
        base = counters(rng, 360 * over)
        known = [None if gap_every and i % gap_every == 0 else v for i, v in enumerate(base)]
        averages = [aggregate("average", [v for v in known[i:i + over] if v is not None])
                    for i in range(0, len(base), over)]
        blob = codec.encode(averages)
        codec_byte, header = values_header(blob)
        assert codec_byte in (0x01, 0x02, 0x03) and header >> 4 in (1, 2, 3, 4)  # divisor 3, 6, 12 or 60
        assert len(blob) / len(averages) < 3 and bits(codec.decode(blob)) == bits(averages)


ROLLUP_KINDS = {  # (over, aggregation, finer slots' gap probability): codec 0x05-0x07 expected?
    (3, "average", 0.0): True, (6, "average", 0.0): True, (6, "average", 0.1): True,
    (12, "average", 0.0): True, (60, "average", 0.0): True, (6, "sum", 0.1): True, (60, "sum", 0.1): True,
    # 11 or 59 of 12 or 60 slots known: k / 1100 is no candidate q, so XOR or split doubles
    (12, "average", 0.1): False, (60, "average", 0.1): False,
}


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("kind", list(ROLLUP_KINDS))
def test_rollups_of_two_decimal_gauges_take_ulp_corrections(codec, kind):
    """turokd's averages and sums of two-decimal gauges are k / q but for an ulp or two: codec
    0x05-0x07, far smaller than XOR, and exact to the bit; where no q fits, the smaller of XOR and
    split doubles."""
    over, aggregation, gap = kind
    values = rollups(random.Random(over), 360, over, aggregation, gap=gap, low=-20.0)
    blob = codec.encode(values)
    assert bits(codec.decode(blob)) == bits(expected(values))
    codec_byte, _header = values_header(blob)
    if ROLLUP_KINDS[kind]:
        assert codec_byte in (0x05, 0x06, 0x07)
        assert len(blob) / len(values) < 3.2 < len(xor_blob(values)) / len(values)
    else:
        assert blob == doubles_blob(values)


@given(st.data())
@settings(CHECKS, max_examples=150)
def test_property_rollups_round_trip_smallest_and_c_matches_reference(data):
    """Random rollups (average or sum over 3, 6, 12 or 60 finer slots of 0-3 decimal gauges, with
    gaps, now and then a special double): exact, C writes the reference's bytes and reads them
    alike, and codec 0x05-0x07 only where it is smaller than XOR and no larger than split doubles."""
    rng = random.Random(data.draw(st.integers(0, 2 ** 32)))
    values = rollups(rng, data.draw(st.integers(1, 400)), data.draw(st.sampled_from([3, 6, 12, 60])),
                     data.draw(st.sampled_from(["average", "sum"])), data.draw(st.integers(0, 3)),
                     gap=data.draw(st.sampled_from([0.0, 0.05, 0.5])), low=data.draw(st.sampled_from([0.0, -100.0])))
    for _ in range(data.draw(st.integers(0, 2))):
        values[rng.randrange(len(values))] = rng.choice(SPECIAL)
    blob = block_codec.encode(values)
    assert bits(block_codec.decode(blob)) == bits(expected(values))
    codec_byte = values_header(blob)[0] if expected(values) else None
    if codec_byte in (0x05, 0x06, 0x07):  # taken only when smaller than XOR, and no larger than split
        assert len(blob) < len(xor_blob(values)) and len(blob) <= len(split_blob(values))
    elif codec_byte in (0x04, 0x08):  # no q fits, or the corrections are no smaller
        assert blob == doubles_blob(values)
    need_c()
    assert native.blockcodec.encode(values) == blob
    assert bits(native.blockcodec.decode(blob)) == bits(expected(values))
    offset = data.draw(st.integers(-10, 10))
    rows = [[-7.25] * 300 for _ in range(2)]
    block_codec.decode_into(blob, rows[0], offset)
    native.blockcodec.decode_into(blob, rows[1], offset)
    assert bits(rows[0]) == bits(rows[1])


@pytest.mark.parametrize("codec", IMPLS)
def test_averages_of_integers_and_random_doubles_keep_their_codecs(codec):
    """Codec 0x05 takes nothing from the others: integer averages stay exact scaled integers,
    random doubles split doubles (XOR before codec 0x08)."""
    rng = random.Random(8)
    integral = [rollup_known([float(rng.randrange(10 ** 6)) for _ in range(6 - (i % 4 == 0))], 6, "average", 0.0)
                for i in range(360)]
    assert values_header(codec.encode(integral))[0] in (0x01, 0x02, 0x03)
    for make in (doubles, lambda rng, n: [rng.uniform(-1e9, 1e9) for _ in range(n)]):
        values = make(rng, 432)
        assert codec.encode(values) == split_blob(values)


GOLDEN = json.loads((Path(__file__).parent.parent / "data" / "block_v2_before_ulps.json").read_text())["blocks"]


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("block", GOLDEN, ids=[block["what"] for block in GOLDEN])
def test_blocks_written_before_codec_5_read_and_keep_their_bytes(codec, block):
    """Blobs the codec wrote before 0x05 existed (tests/data) read as they did; their values are
    encoded to the same bytes, but for the rollups of decimals, which codec 0x05 now takes, and the
    full-precision doubles, which codec 0x08 now takes, smaller."""
    values = [None if v is None else float.fromhex(v) for v in block["values"]]
    old = bytes.fromhex(block["blob"])
    assert bits(codec.decode(old)) == bits(expected(values))
    new = codec.encode(values)
    if values_header(old)[0] == 0x04 and "gauges" in block["what"]:
        assert values_header(new)[0] in (0x05, 0x06, 0x07) and len(new) < len(old) / 2
    elif values_header(old)[0] == 0x04 and block["what"] == "full-precision doubles":
        assert values_header(new)[0] == 0x08 and len(new) < len(old)
    else:
        assert new == old


ONE_ULP_ABOVE_1 = 1.0000000000000002


@pytest.mark.parametrize("codec", IMPLS)
@pytest.mark.parametrize("blob, want", [
    # one value, k = 1 at q = 1 (header 0x00, base svarint 2, width 0), then the corrections
    (b"\x02\x01\x00\x01\x05\x00\x02\x00\x01\xc0", [ONE_ULP_ABOVE_1]),  # uwidth 1: flag 1, zigzag(+1) - 1 = 1
    (b"\x02\x01\x00\x01\x05\x00\x02\x00\x00\x80", [0.9999999999999999]),  # uwidth 0: flag 1 alone is -1
    (b"\x02\x01\x00\x01\x05\x00\x00\x00\x01\xc0", [5e-324]),  # k = 0, +1 ulp: the smallest subnormal
    (b"\x02\x01\x00\x01\x05\x00\x02\x00\x01\x00", [1.0]),  # flag 0: no correction (no encoder writes it)
    (b"\x02\x01\x00\x01\x05\x00\x00\x00\x00\x80", "refused"),  # 0.0 less one ulp is a NaN
    (b"\x02\x01\x00\x01\x05\x00\x02\x00\x09\xc0\x00", "refused"),  # uwidth 9 > MAX_ULP_WIDTH
    (b"\x02\x01\x00\x01\x05\x00\x02\x00\x01", "refused"),  # corrections missing
    (b"\x02\x01\x00\x01\x05\x00\x02\x00", "refused"),  # uwidth missing
    (b"\x02\x01\x00\x01\x05\x00\x02\x00\x01\xc0\x00", "refused"),  # a byte after the corrections
    (b"\x02\x01\x00\x01\x05\x00\x02\x00\x08\xff", "refused"),  # flag 1 and 7 of 8 bits
    (b"\x02\x01\x00\x01\x09\x00\x02\x00\x01\xc0", "refused"),  # codec 9: unknown
])
def test_hand_made_corrected_blobs(codec, blob, want):
    try:
        got = bits(codec.decode(blob))
    except ValueError:
        got = "refused"
    assert got == (want if want == "refused" else bits(want))
    if want not in ("refused", [1.0]):
        assert codec.encode(want) == blob  # the encoder's own choice: 10 bytes against XOR's 13


@pytest.mark.parametrize("codec", IMPLS)
def test_corrections_are_bounded_by_max_ulps(codec):
    """A correction of MAX_ULPS still fits q = 1; one more takes another q (or XOR), never a
    correction wider than MAX_ULP_WIDTH bits."""
    def shifted(value: float, ulps: int) -> float:
        return struct.unpack("<d", struct.pack("<q", struct.unpack("<q", struct.pack("<d", value))[0] + ulps))[0]
    rng = random.Random(6)
    ks = [float(rng.randrange(10 ** 5, 10 ** 6)) for _ in range(40)]
    for first in (block_codec.MAX_ULPS, -block_codec.MAX_ULPS, block_codec.MAX_ULPS + 1):
        corrections = [first] + [rng.choice([-1, 0, 0, 1]) for _ in ks[1:]]
        values = [shifted(k, c) for k, c in zip(ks, corrections)]
        blob = codec.encode(values)
        assert bits(codec.decode(blob)) == bits(values) and blob == block_codec.encode(values)
        if abs(first) <= block_codec.MAX_ULPS:
            assert values_header(blob) == (0x05, 0x00)  # the k themselves at q = 1
            flags_and_corrections = (len(ks) + block_codec.MAX_ULP_WIDTH * sum(map(bool, corrections)) + 7) // 8
            assert blob[-flags_and_corrections - 1] == block_codec.MAX_ULP_WIDTH  # uwidth
        else:
            assert values_header(blob) != (0x05, 0x00)


@given(st.binary(max_size=16), st.data())
@CHECKS
def test_broken_corrected_blobs_are_refused_alike(garbage, data):
    """Codec 0x05-0x07 blobs cut short, extended or with a bit flipped: C and the reference both
    refuse them, or both read the same slots, with decode and with decode_into."""
    rng = random.Random(data.draw(st.integers(0, 2 ** 32)))
    values = rollups(rng, data.draw(st.integers(1, 40)), data.draw(st.sampled_from([3, 6, 12])), gap=0.05)
    blob = block_codec.encode(values)
    cut = data.draw(st.integers(0, len(blob)))
    flipped = bytearray(blob)
    flipped[data.draw(st.integers(1, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    need_c()
    for candidate in (blob[:cut], blob + garbage, bytes(flipped)):
        outcomes = []
        for codec in (block_codec, native.blockcodec):
            row = [None] * 50
            try:
                outcomes.append((bits(codec.decode(candidate)), codec.decode_into(candidate, row, 2), bits(row)))
            except ValueError:
                outcomes.append("refused")
        assert len(set(map(repr, outcomes))) == 1, candidate


def test_the_extension_is_built_here():
    """`make install` builds it; without it the reference does the same work, slower (native.py)."""
    need_c()
    assert native.describe() == "C"


def test_without_the_extension_blocks_are_the_same(monkeypatch):
    """``TUROK_PURE_PYTHON=1`` (or no compiler): ``block_layout`` falls back to the reference."""
    values = [1.0, None, 2.5, 1e300, -0.0] + gauges(random.Random(9), 50)
    with_c = encode_datapoints(values)
    monkeypatch.setattr("turok_core.storage.block_layout.blockcodec", None)
    assert encode_datapoints(values) == with_c
    assert bits(decode_datapoints(with_c)) == bits(expected(values))
    monkeypatch.setenv("TUROK_PURE_PYTHON", "1")
    assert load_extension("turok_core.storage._blockcodec") is None


def bytes_per_point(make, slots: int = 432, blocks: int = 20, seed: int = 1) -> float:
    rng = random.Random(seed)
    return sum(len(encode_datapoints(make(rng, slots))) for _ in range(blocks)) / (slots * blocks)


def test_bytes_per_point_by_value_kind():
    """What v2 stores per point (v1: ~9 bytes). Loose bounds; docs/write-path.md has the figures."""
    counter = bytes_per_point(counters)
    cost_counter = bytes_per_point(cost_counters)
    gauge = bytes_per_point(gauges)
    double = bytes_per_point(doubles)
    mixed = 0.5 * cost_counter + 0.3 * gauge + 0.2 * double  # bench/cost.py's mix
    assert counter <= 1.5
    assert cost_counter <= 1.7  # uniform 0-5000 increments: 1.54 bytes of entropy each
    assert gauge <= 1.85
    assert double <= 6.8  # split doubles (codec 0x08; XOR: 7.50)
    assert mixed <= 3.5
    assert bytes_per_point(lambda rng, n: [None if i % 7 else 1.0 * i for i in range(n)]) <= 0.5  # sparse
    # turokd's 1-minute averages of two-decimal gauges (360-slot blocks): ~7.2 bytes as XOR
    assert bytes_per_point(lambda rng, n: rollups(rng, n), slots=360) <= 2.4


def test_auto_block_length_fills_a_write_unit_and_divides_a_day():
    assert block_span(10, 0) == 4320 and block_span(60, 0) == 21600 and block_span(3600, 0) == SECONDS_PER_DAY
    assert block_span(1, 0) == 432 and block_span(300, 0) == SECONDS_PER_DAY
    for step in (1, 5, 10, 20, 30, 60, 300, 600, 3600, 86400):
        span = block_span(step, 0)
        assert SECONDS_PER_DAY % span == 0 and span // step <= AUTO_SLOTS
    assert block_span(10, 90) == 900  # an explicit block_slots still rules
    slots = block_span(10, 0) // 10
    name = "servers.host-0042.application-frontend.requests.http_2xx.count_per_interval.total"
    for make in (counters, gauges):
        blob = encode_datapoints(make(random.Random(5), slots))
        assert item_size(name, 1_795_478_400, blob) <= 1024


def test_coarse_block_length_is_two_write_units_of_grid_cells_dividing_a_day():
    from turok_core.storage.block_layout import AUTO_COARSE_SLOTS, coarse_block_span
    assert AUTO_COARSE_SLOTS == 960
    assert coarse_block_span(60, 0) == 720 * 60 and coarse_block_span(10, 0) == 864 * 10
    assert coarse_block_span(3600, 0) == coarse_block_span(300, 0) == SECONDS_PER_DAY
    for step in (1, 5, 10, 20, 30, 60, 300, 600, 3600, 86400):
        span, grid = coarse_block_span(step, 0), block_span(step, 0)
        assert SECONDS_PER_DAY % span == 0 and span % grid == 0 and span // step <= max(960, grid // step)
    # an explicit block_slots: coarse blocks as long as base ones, unless coarse_block_slots says more
    assert coarse_block_span(10, 6) == block_span(10, 6) == 60
    assert coarse_block_span(10, 6, 20) == 180 and coarse_block_span(60, 0, 500) == 360 * 60  # rounded down
    assert coarse_block_span(60, 0, 10) == 360 * 60  # never below the grid
    # 720 one-minute slots of counters or gauges stay within the two units
    name = "servers.host-0042.application-frontend.requests.http_2xx.count_per_interval.total"
    for make in (counters, gauges):
        assert item_size(name, 1_795_478_400, encode_datapoints(make(random.Random(5), 720))) <= 2048
