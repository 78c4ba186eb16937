"""Slot values placed into open blocks: the C ``_speedups.place`` against ``open_blocks.py_place``."""
from __future__ import annotations

import math
import random
import struct
from array import array

import pytest

from turok_core.turokd import open_blocks
from turok_core.turokd.open_blocks import OpenBlocks, place, py_place

native = pytest.mark.skipif(open_blocks.native is None, reason="turok_core.turokd._speedups not built")


def bits(block: dict) -> dict:
    return {metric: [struct.pack("<d", v) for v in values] for metric, values in block.items()}


def random_blocks(rng: random.Random, slots: int) -> tuple[dict, dict]:
    block = {f"m{n}": array("d", [rng.choice([math.nan, rng.uniform(-9, 9)]) for _ in range(slots)])
             for n in range(rng.randint(0, 30))}
    window = {f"m{rng.randint(0, 60)}": rng.choice([rng.uniform(-1e9, 1e9), -0.0, 5e-324, 3.0])
              for _ in range(rng.randint(0, 40))}
    return block, window


@native
@pytest.mark.parametrize("seed", range(30))
def test_c_place_is_the_reference(seed):
    rng = random.Random(seed)
    slots = rng.choice([1, 6, 90, 432])
    block, window = random_blocks(rng, slots)
    index = rng.randrange(slots)
    c = {metric: array("d", values) for metric, values in block.items()}
    py = {metric: array("d", values) for metric, values in block.items()}
    place(c, window, index, slots)
    py_place(py, window, index, slots)
    assert bits(c) == bits(py)
    assert all(type(values) is array and values.typecode == "d" and len(values) == slots for values in c.values())
    # a new metric's block is its own, not the shared block of gaps
    for metric in window:
        if metric not in block:
            c[metric][:] = array("d", [1.0]) * slots
    assert all(math.isnan(v) for v in open_blocks._gaps(slots))


@native
def test_c_place_refuses_what_the_reference_refuses():
    for implementation in (open_blocks.native.place,):
        with pytest.raises(TypeError):
            implementation({}, {"m": "x"}, 0, array("d", [math.nan]))
        with pytest.raises(IndexError):
            implementation({}, {"m": 1.0}, 1, array("d", [math.nan]))
        with pytest.raises(TypeError):
            implementation({"m": [math.nan]}, {"m": 1.0}, 0, array("d", [math.nan]))
    with pytest.raises(TypeError):
        py_place({}, {"m": "x"}, 0, 1)
    with pytest.raises(IndexError):
        py_place({}, {"m": 1.0}, 1, 1)


@pytest.mark.parametrize("use_c", [pytest.param(True, marks=native), False])
def test_open_blocks_hold_what_windows_carry(use_c, monkeypatch):
    if not use_c:
        monkeypatch.setattr(open_blocks, "native", None)
    blocks = OpenBlocks(6, 1.0, 0.0, 0.0)
    blocks.add_windows({(10, 0): {"a": 1.0, "b": 2.0}, (10, 50): {"a": 5.0}, (10, 60): {"c": 7.0}}, [])
    blocks.add_windows({(10, 10): {"a": 1.5, "b": -0.0}, (10, 0): {"a": 3.0}}, [])
    due = blocks.take_due(math.inf)
    got = {key: {metric: [None if v != v else v for v in values] for metric, values in metrics.items()}
           for key, metrics in due.blocks.items()}
    assert got == {(10, 0): {"a": [3.0, 1.5, None, None, None, 5.0], "b": [2.0, -0.0, None, None, None, None]},
                   (10, 60): {"c": [7.0, None, None, None, None, None]}}
