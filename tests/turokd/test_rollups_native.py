"""turokd's rollups of whole blocks: the C ``_speedups`` against its pure-Python reference
(``rollup.py``: ``known_span``, ``rollup_into``) and against whisper's per-slot rule
(``rollup_value``), bit for bit; and ``CoarseBlock.add_finer`` alike with and without C."""
from __future__ import annotations

import math
import random
import struct
from array import array
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turok_core.turokd import rollup
from turok_core.turokd.coarse_blocks import CoarseBlock
from turok_core.turokd.rollup import METHOD_CODES, py_known_span, py_rollup_into, rollup_value, whisper_xff
from turok_core.turokd.rollup_writer import RollupPlan

METHODS = sorted(METHOD_CODES)
# whisper's xFilesFactor edges: 0, exactly k/6 (1/3 stored as 0.33333334 falls above 2/6), 1
FACTORS = [0.0, 1 / 6, 1 / 3, 0.5, 2 / 3, 0.9, 1.0]
NAN = math.nan


def bits(values) -> list:
    """Doubles as their bit patterns (NaN, -0.0 and 0.0 told apart); None kept."""
    return [None if v is None else struct.pack("<d", v) for v in values]


def gaps_as_none(values) -> list:
    """``bits``, with every NaN (a gap, whatever its sign bit) as None."""
    return bits([None if v != v else v for v in values])


def random_value(rng: random.Random) -> float:
    return rng.choice([
        NAN, NAN, NAN,  # gaps
        rng.uniform(-1e6, 1e6), round(rng.uniform(0, 100), 2), float(rng.randint(-5, 5)), -0.0, 0.0,
        5e-324, -2.2250738585072014e-308, 1.7976931348623157e308, math.inf, -math.inf,
        rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300),
    ])


def random_block(rng: random.Random, slots: int, gaps: float) -> array:
    return array("d", [NAN if rng.random() < gaps else random_value(rng) for _ in range(slots)])


native = pytest.mark.skipif(rollup.native is None, reason="turok_core.turokd._speedups not built")


@native
@pytest.mark.parametrize("seed", range(40))
def test_c_rollup_into_is_the_reference_bit_for_bit(seed):
    rng = random.Random(seed)
    ratio = rng.choice([1, 2, 6, 60])
    count = rng.randint(0, 20)
    offset = rng.randint(0, 7)
    values = random_block(rng, offset + count * ratio + rng.randint(0, 5), rng.choice([0.0, 0.3, 0.8, 1.0]))
    for method in METHODS:
        for xff in FACTORS:
            xff = whisper_xff(xff)
            before = random_block(rng, count + 4, 0.5)
            index = rng.randint(0, 4)
            c, py = array("d", before), array("d", before)
            rollup.native.rollup_into(values, offset, c, index, count, ratio, METHOD_CODES[method], xff)
            py_rollup_into(values, offset, py, index, count, ratio, method, xff)
            assert bits(c) == bits(py)
            # and each coarse slot is whisper's rule on its finer slots (None: left as it was)
            for k in range(count):
                window = [None if v != v else v for v in values[offset + k * ratio:offset + (k + 1) * ratio]]
                if not any(v is not None for v in window):
                    expected = before[index + k]  # left as it was
                else:  # known values below the xFilesFactor: NaN
                    expected = rollup_value(window, method, xff)
                    expected = NAN if expected is None else expected
                assert bits([c[index + k]]) == bits([expected])


@native
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(NAN)), max_size=200))
@settings(max_examples=300, deadline=None)
def test_c_known_span_is_the_reference(values):
    block = array("d", values)
    assert rollup.native.known_span(block) == py_known_span(block) == py_known_span(
        [None if v != v else v for v in values])


@native
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=60),
       st.sampled_from(METHODS), st.sampled_from(FACTORS), st.sampled_from([1, 2, 3, 6]))
@settings(max_examples=300, deadline=None)
def test_property_c_rollup_into_is_the_reference(values, method, xff, ratio):
    count = len(values) // ratio
    c, py = array("d", [1.5] * count), array("d", [1.5] * count)
    rollup.native.rollup_into(array("d", values), 0, c, 0, count, ratio, METHOD_CODES[method], whisper_xff(xff))
    py_rollup_into(values, 0, py, 0, count, ratio, method, whisper_xff(xff))
    assert bits(c) == bits(py)


def test_sum_adds_left_to_right_as_python_311_does():
    # a compensated sum (CPython 3.12's sum()) gives 1.0 here; whisper's Python 3.11 gives 0.0
    values = array("d", [1e16, 1.0, -1e16, NAN, NAN, NAN])
    for implementation in ([rollup.native.rollup_into] if rollup.native is not None else []):
        coarse = array("d", [NAN])
        implementation(values, 0, coarse, 0, 1, 6, METHOD_CODES["sum"], 0.5)
        assert coarse[0] == 1e16 + 1.0 - 1e16
    coarse = array("d", [NAN])
    py_rollup_into(values, 0, coarse, 0, 1, 6, "sum", 0.5)
    assert coarse[0] == float(sum([1e16, 1.0, -1e16]))


@native
def test_c_refuses_what_is_not_a_block_of_doubles():
    with pytest.raises(TypeError):
        rollup.native.known_span([1.0, 2.0])
    with pytest.raises(TypeError):
        rollup.native.rollup_into(array("f", [1.0] * 6), 0, array("d", [NAN]), 0, 1, 6, 0, 0.5)
    with pytest.raises(IndexError):
        rollup.native.rollup_into(array("d", [1.0] * 6), 1, array("d", [NAN]), 0, 1, 6, 0, 0.5)
    with pytest.raises(ValueError):
        rollup.native.rollup_into(array("d", [1.0] * 6), 0, array("d", [NAN]), 0, 1, 6, 9, 0.5)
    with pytest.raises(IndexError):
        py_rollup_into(array("d", [1.0] * 6), 0, array("d", [NAN]), 1, 1, 6, "sum", 0.5)


def old_add_finer(block: CoarseBlock, start: int, values) -> None:
    """``add_finer`` as it was before the C rollups (one Python step per coarse slot), for comparison."""
    plan, coarse = block.plan, block.values
    step, coarse_step = plan.finer_step, plan.coarse_step
    ratio = coarse_step // step
    end = start + len(values) * step
    known = [v == v for v in values]
    if True not in known:
        return
    first = start + known.index(True) * step
    last = start + (len(known) - 1 - known[::-1].index(True)) * step
    for slot in range(max(first - first % coarse_step, plan.start), min(last + 1, plan.end), coarse_step):
        index = (slot - plan.start) // coarse_step
        if slot >= start and slot + coarse_step <= end:
            offset = (slot - start) // step
            window = [None if v is None or v != v else v for v in values[offset:offset + ratio]]
            if any(v is not None for v in window):
                value = rollup_value(window, plan.aggregation_type, plan.x_files_factor)
                coarse[index] = NAN if value is None else value
            continue
        low, high = (max(slot, start) - start) // step, (min(slot + coarse_step, end) - start) // step
        if True not in known[low:high]:
            continue
        part = block.partial.setdefault(index, array("d", [NAN]) * ratio)
        for t in range(max(slot, start), min(slot + coarse_step, end), step):
            value = values[(t - start) // step]
            part[(t - slot) // step] = NAN if value is None else value


def plan_of(method: str, xff: float, start: int = 0, end: int = 7200) -> RollupPlan:
    return RollupPlan("m", 0, 10, 60, start, end, method, xff)


@pytest.mark.parametrize("use_c", [pytest.param(True, marks=native), False])
@pytest.mark.parametrize("seed", range(30))
def test_add_finer_computes_what_it_did_slot_by_slot(seed, use_c, monkeypatch):
    if not use_c:
        monkeypatch.setattr(rollup, "native", None)
    rng = random.Random(seed)
    method, xff = rng.choice(METHODS), rng.choice(FACTORS)
    plan = plan_of(method, xff)
    new = CoarseBlock(plan, 0.0, array("d", [NAN]) * 120)
    old = CoarseBlock(plan, 0.0, array("d", [NAN]) * 120)
    # finer blocks of 25 slots (250 s: not a multiple of 60, so coarse slots straddle them),
    # some starting before the plan or ending after it, some lists with None as merges hand over
    for start in range(-250, 7450, 250):
        values = random_block(rng, 25, rng.choice([0.0, 0.5, 0.9, 1.0]))
        given: object = values if rng.random() < 0.7 else [None if v != v else v for v in values]
        new.add_finer(start, given)
        old_add_finer(old, start, values)
    # held encoded between finer blocks, where every NaN is a gap (a NaN's sign bit is not kept)
    assert gaps_as_none(new._unpacked()) == gaps_as_none(old.values)
    assert sorted(new.partial) == sorted(old.partial)
    assert all(bits(new.partial[i]) == bits(old.partial[i]) for i in old.partial)
    assert gaps_as_none(new.finish()) == gaps_as_none(old.finish())


def expected_coarse(plan: RollupPlan, finer: dict[int, Optional[float]]) -> list:
    """Each coarse slot by whisper's rule over the finer slots it covers (NaN: none reached the factor)."""
    ratio = plan.coarse_step // plan.finer_step
    out = []
    for slot in range(plan.start, plan.end, plan.coarse_step):
        window = [finer.get(slot + i * plan.finer_step) for i in range(ratio)]
        if not any(v is not None for v in window):
            out.append(NAN)
            continue
        value = rollup_value(window, plan.aggregation_type, plan.x_files_factor)
        out.append(NAN if value is None else value)
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("block_slots", [6, 90, 432, 25])
def test_whole_coarse_block_from_finer_blocks_is_whispers(method, block_slots):
    rng = random.Random(block_slots)
    plan = plan_of(method, 0.5, 3600, 3600 + 7200)
    block = CoarseBlock(plan, 0.0, array("d", [NAN]) * 120)
    finer: dict[int, Optional[float]] = {}
    span = block_slots * 10
    for start in range(3600 - 3600 % span, plan.end, span):
        values = random_block(rng, block_slots, 0.4)
        for i, v in enumerate(values):
            finer[start + i * 10] = None if v != v else v
        block.add_finer(start, values)
    assert gaps_as_none(block.finish()) == gaps_as_none(expected_coarse(plan, finer))
