"""Block format v2 in tests: the codecs to compare, value shapes, and reading a blob's parts.

The value shapes are what turokd stores (counters, gauges, doubles, its own rollups); ``bits``
and ``expected`` say what a round trip must give back; ``values_header`` tells the codec a blob uses,
``xor_blob`` / ``split_blob`` what codec 0x04 / 0x08 alone would have made of the same values.
"""
from __future__ import annotations

import math
import os
import random
import struct
from typing import Optional

import pytest
from hypothesis import HealthCheck, settings

from turok_core.storage import block_codec, block_codec_doubles, native
from turok_core.turokd.rollup import rollup_known

CHECKS = settings(max_examples=300, deadline=2000, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SPECIAL = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -math.inf, math.inf,
           2.0 ** 53, 2.0 ** 53 + 2, -(2.0 ** 60), 2.0 ** 63, 1e300, 0.1 + 0.2]
# the C codec is built by `make install`; without it these cases fail (test_the_extension_is_built_here says why)
PURE_PYTHON = os.environ.get("TUROK_PURE_PYTHON", "0") not in ("", "0")
# the C codec's cases skip where pure Python is forced; elsewhere a C codec that did not load fails
# them (and tests/model/test_extensions.py)
IMPLS = [pytest.param(block_codec, id="reference"),
         pytest.param(native.blockcodec, id="C", marks=pytest.mark.skipif(PURE_PYTHON, reason="TUROK_PURE_PYTHON"))]


def need_c() -> None:
    """Skip a test comparing the C codec with the reference where pure Python is forced; fail it
    where the C codec should have loaded and did not."""
    if PURE_PYTHON:
        pytest.skip("TUROK_PURE_PYTHON: the C block codec is not loaded")
    assert native.blockcodec is not None, native.describe()


def bits(values: list) -> list:
    """Values as their exact bit patterns (so -0.0 differs from 0.0), None kept."""
    return [None if v is None else struct.pack("<d", v) for v in values]


def values_header(blob: bytes) -> tuple[int, int]:
    """The values codec byte of a v2 blob and the byte after it."""
    offset = values_offset(blob)
    return blob[offset], blob[offset + 1]


def expected(values: list) -> list:
    """What decoding gives back: NaN as None, floats, trailing gaps dropped."""
    slots = [None if v is None or v != v else float(v) for v in values]
    while slots and slots[-1] is None:
        slots.pop()
    return slots


def counters(rng: random.Random, n: int, rate: int = 50) -> list[float]:
    """An integer counter at a steady rate with noise (requests, bytes, errors…)."""
    total, out = rng.randint(0, 10 ** 9), []
    for _ in range(n):
        total += max(0, int(rng.gauss(rate, rate ** 0.5 * 2)))
        out.append(float(total))
    return out


def cost_counters(rng: random.Random, n: int) -> list[float]:
    """bench/cost.py's counters: increments drawn uniformly from 0..5000 (entropy 12.3 bits each)."""
    total, out = rng.randint(0, 10 ** 9), []
    for _ in range(n):
        total += rng.randint(0, 5000)
        out.append(float(total))
    return out


def gauges(rng: random.Random, n: int) -> list[float]:
    return [round(rng.uniform(0, 100), 2) for _ in range(n)]


def doubles(rng: random.Random, n: int) -> list[float]:
    return [rng.uniform(0, 1000) for _ in range(n)]


def rollups(rng: random.Random, n: int, over: int = 6, aggregation: str = "average", decimals: int = 2,
            gap: float = 0.0, low: float = 0.0) -> list[Optional[float]]:
    """A coarse block as turokd computes it (``rollup_known``): each slot the average or sum of
    ``over`` finer slots of ``decimals``-decimal gauges in [low, 100], each finer slot missing
    with probability ``gap`` (a coarse slot with none known is a gap)."""
    out: list[Optional[float]] = []
    for _ in range(n):
        known = [round(rng.uniform(low, 100), decimals) for _ in range(over) if rng.random() >= gap]
        out.append(rollup_known(known, over, aggregation, 0.0) if known else None)
    return out


def xor_blob(values: list) -> bytes:
    """The blob codec 0x04 alone makes of the values (at least one), as the encoder wrote every
    block that was not scaled integers before codec 0x05."""
    blob = block_codec.encode(values)
    out = bytearray(blob[:values_offset(blob)])
    block_codec_doubles.encode_xor([v for v in expected(values) if v is not None], out)
    return bytes(out)


def split_blob(values: list) -> bytes:
    """The blob codec 0x08 (split doubles) alone makes of the values (at least one), whichever
    codec the encoder would choose."""
    blob = block_codec.encode(values)
    out = bytearray(blob[:values_offset(blob)])
    block_codec_doubles.encode_split([v for v in expected(values) if v is not None], out)
    return bytes(out)


def doubles_blob(values: list) -> bytes:
    """What the encoder writes for values no ``q`` fits: the smaller of codecs 0x04 and 0x08, a tie XOR."""
    xor, split = xor_blob(values), split_blob(values)
    return split if len(split) < len(xor) else xor


def values_offset(blob: bytes) -> int:
    """Where a v2 blob's values codec byte is."""
    reader = block_codec._Reader(blob)
    reader.byte()
    n, covered = reader.uvarint(), 0
    while covered < n:
        covered += reader.uvarint() + reader.uvarint()
    return reader.offset
