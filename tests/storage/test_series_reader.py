"""SeriesReader's batched rollups: the same values, bit for bit, as whisper's per-slot arithmetic."""
from __future__ import annotations

import random
import struct

import pytest

from turok_core.storage.series_reader import rollup_row
from turok_core.turokd.rollup import rollup_value

METHODS = ("average", "sum", "minimum", "maximum", "last")


def bits(values):
    return [None if v is None else struct.pack("!d", v) for v in values]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("xff", (0.0, 0.5, 0.3, 1.0))
def test_rollup_row_matches_rollup_value_slot_by_slot(method, xff):
    rng = random.Random(f"{method}{xff}")
    for _ in range(200):
        ratio = rng.choice((1, 2, 5, 6, 60))
        runs = rng.randrange(0, 12)
        gaps = rng.choice((0.0, 0.1, 0.6, 1.0))
        kind = rng.choice(("int", "short", "double"))
        values = [None if rng.random() < gaps else
                  float(rng.randrange(-1000, 1000)) if kind == "int" else
                  round(rng.uniform(-100, 100), 2) if kind == "short" else
                  rng.uniform(-1e6, 1e6) * 10 ** rng.randrange(-300, 300)
                  for _ in range(ratio * runs + rng.choice((0, 0, rng.randrange(ratio))))]
        expected = [rollup_value(values[i:i + ratio], method, xff) for i in range(0, len(values), ratio)]
        assert bits(rollup_row(values, ratio, method, xff)) == bits(expected)


def test_rollup_row_adds_in_time_order_like_whisper():
    # a sum's rounding depends on the order of its terms: whisper adds them in time order (1.0
    # here, not 2.0), and from an integer 0, so -0.0 terms sum to 0.0
    values = [1e16, 1.0, -1e16, 1.0, -0.0, -0.0, -0.0, -0.0]
    for method in ("sum", "average"):
        expected = [rollup_value(values[:4], method, 0.5), rollup_value(values[4:], method, 0.5)]
        assert bits(rollup_row(values, 4, method, 0.5)) == bits(expected)
    assert rollup_row(values, 4, "sum", 0.5)[0] == 1.0
