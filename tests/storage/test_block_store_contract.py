"""The block store contract: every test runs against ``MemoryBlockStore`` and the boto3 ``BlockStore``
on moto and on dynalite (whose request validation is closer to DynamoDB's: what moto lets
through and DynamoDB refuses fails here).

What any block store promises its callers (turokd, the finder, the keeper): day tables named and
created as in DynamoDB, slot values set (never added) and merged into their blocks, redeliveries
unchanged, gaps as None, whole blocks from ``fetch_slots``, the same errors for unaligned input.
DynamoDB-only behaviour (batch sizes, retries, throttling, table caches) is in tests/storage/test_block_store.py.
"""
from __future__ import annotations

import calendar
import math
import random
import threading
import uuid

import pytest

from tests.conftest import DYNAMODB_SERVERS, make_dynamodb_config
from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import make_client
from turok_core.storage.block_layout import block_span, encode_datapoints
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.tables import BlockStore
from turok_core.storage.writes import item_size

DAY = calendar.timegm((2014, 4, 1, 0, 0, 0))  # 01-04-2014 00:00:00 UTC
STEP = 10


@pytest.fixture(params=["memory", *DYNAMODB_SERVERS])
def make_store(request):
    """A function making a store of one kind on a config of its own: ``make_store(**config changes)``."""
    if request.param == "memory":
        base = TurokConfig(table_prefix=f"m{uuid.uuid4().hex[:8]}")
        return lambda **changes: MemoryBlockStore(base.replace(**changes))
    base = make_dynamodb_config(request, request.param)

    def boto3_store(**changes):
        config = base.replace(**changes)
        return BlockStore(make_client("dynamodb", config), config)
    return boto3_store


def test_round_trip_with_gaps_over_several_blocks(make_store):
    store = make_store(block_slots=60)
    assert store.span(STEP) == block_span(STEP, 60) == 600
    slots = [("a.b", STEP, DAY, 1.5), ("a.b", STEP, DAY + 10, 2.0), ("a.b", STEP, DAY + 1250, -3.0),
             ("c.d", STEP, DAY + 590, 4.0), ("c.d", STEP, DAY + 600, 5.0)]
    stats = store.write_slots(slots)
    assert stats.items_written == 4 and stats.tables_created == 1 and stats.items_unchanged == 0
    assert stats.write_units == 4  # small blocks cost one unit each
    got = store.fetch_series(["a.b", "c.d", "nope"], STEP, DAY, DAY + 1800)
    expected_ab = [None] * 180
    expected_ab[0], expected_ab[1], expected_ab[125] = 1.5, 2.0, -3.0
    expected_cd = [None] * 180
    expected_cd[59], expected_cd[60] = 4.0, 5.0
    assert got == {"a.b": expected_ab, "c.d": expected_cd, "nope": [None] * 180}
    # a range starting inside a block, ending inside another
    assert store.fetch_series(["a.b"], STEP, DAY + 1240, DAY + 1270) == {"a.b": [None, -3.0, None]}
    assert store.fetch_series(["a.b"], STEP, DAY, DAY) == {"a.b": []}
    assert store.fetch_series([], STEP, DAY, DAY + 60) == {}


def test_unaligned_input_is_refused(make_store):
    store = make_store()
    with pytest.raises(ValueError):
        store.fetch_series(["a.b"], STEP, DAY + 5, DAY + 100)
    with pytest.raises(ValueError):
        store.write_slots([("a.b", STEP, DAY + 5, 1.0)])
    with pytest.raises(ValueError):
        store.write_blocks([("a.b", STEP, DAY + STEP, {0: 1.0})])
    assert store.fetch_series(["a.b"], STEP, DAY, DAY + 20) == {"a.b": [None, None]}  # nothing written


def test_range_across_midnight_uses_two_day_tables(make_store):
    store = make_store()
    prefix = store.config.table_prefix
    midnight = DAY + 86400
    names = [f"{prefix}_01-04-2014_10sec", f"{prefix}_01-04-2014_1min", f"{prefix}_02-04-2014_10sec"]
    assert store.table_for(midnight - 10, STEP) == names[0] and store.table_for(midnight, STEP) == names[2]
    assert store.existing_tables(names) == set()
    stats = store.write_slots([("x.y", STEP, midnight - 10, 1.0), ("x.y", STEP, midnight, 2.0),
                               ("x.y", 60, midnight - 60, 7.0)])
    assert stats.tables_created == 3
    assert store.existing_tables(names + [f"{prefix}_03-04-2014_10sec"]) == set(names)
    assert store.fetch_series(["x.y"], STEP, midnight - 20, midnight + 20) == {"x.y": [None, 1.0, 2.0, None]}
    assert store.fetch_series(["x.y"], 60, midnight - 120, midnight + 60) == {"x.y": [None, 7.0, None]}


def test_ensure_table_creates_once(make_store):
    store = make_store()
    name = store.table_for(DAY, STEP)
    store.ensure_table(name)
    store.ensure_table(name)
    assert store.existing_tables([name]) == {name}
    assert store.write_slots([("t.m", STEP, DAY, 1.0)]).tables_created == 0
    assert name in store.table_names()  # what the finder's table catalog lists


def test_slots_are_set_merged_and_a_redelivery_changes_nothing(make_store):
    store = make_store()
    assert store.write_slots([("merge.m", STEP, DAY, 1.0), ("merge.m", STEP, DAY + 10, 2.0)]).tables_created == 1
    stats = store.write_slots([("merge.m", STEP, DAY + 10, 5.0), ("merge.m", STEP, DAY + 30, 7)])
    assert stats.items_written == 1 and stats.tables_created == 0
    # set, not added; the other slots keep their values; integers stay integers
    assert store.fetch_series(["merge.m"], STEP, DAY, DAY + 50) == {"merge.m": [1.0, 5.0, None, 7, None]}
    again = store.write_slots([("merge.m", STEP, DAY + 10, 5.0), ("merge.m", STEP, DAY + 30, 7)])
    assert again.items_written == 0 and again.items_unchanged == 1 and again.write_calls == 0
    assert again.write_units == 0


@pytest.mark.parametrize("conditional", [True, False])
def test_write_blocks_merges_into_blocks_that_exist(make_store, conditional):
    store = make_store(conditional_writes=conditional)
    span = store.span(STEP)
    store.write_slots([("blk.m", STEP, DAY + 20, 3.0)])
    # assume_new (a block that just closed in turokd): a new block is written, an old one merged
    stats = store.write_blocks([("blk.m", STEP, DAY, {0: 1.0, 1: 2.0}), ("blk.m", STEP, DAY + span, {2: 9.0}),
                                ("new.m", STEP, DAY, {})])
    assert stats.items_written == 3 and stats.items_unchanged == 0
    got = store.fetch_series(["blk.m", "new.m"], STEP, DAY, DAY + span + 30)
    assert got["blk.m"][:3] == [1.0, 2.0, 3.0] and got["blk.m"][-3:] == [None, None, 9.0]
    assert got["new.m"] == [None] * (span // STEP + 3)
    again = store.write_blocks([("blk.m", STEP, DAY, {0: 1.0})], assume_new=False)
    assert again.items_written == 0 and again.items_unchanged == 1
    assert store.write_blocks([]).items_written == 0


def test_fetch_slots_returns_every_known_slot_of_the_blocks(make_store):
    store = make_store(block_slots=60)
    span = store.span(STEP)
    store.write_slots([("s.a", STEP, DAY, 1.0), ("s.a", STEP, DAY + 500, 2.0), ("s.a", STEP, DAY + span, 3.0),
                       ("s.b", STEP, DAY + 2 * span, 4.0)])
    # the block of [DAY + 20, DAY + 30) holds DAY and DAY + 500 too; s.b has nothing there; no such metric
    assert store.fetch_slots(STEP, [("s.a", DAY + 20, DAY + 30), ("s.b", DAY, DAY + span), ("none", DAY, DAY + 10)]
                             ) == {"s.a": {DAY: 1.0, DAY + 500: 2.0}}
    assert store.fetch_slots(STEP, [("s.a", DAY, DAY + 3 * span), ("s.b", DAY, DAY + 3 * span)], consistent=True) == {
        "s.a": {DAY: 1.0, DAY + 500: 2.0, DAY + span: 3.0}, "s.b": {DAY + 2 * span: 4.0}}
    assert store.fetch_slots(STEP, []) == {}
    assert store.fetch_slots(60, [("s.a", DAY, DAY + 3600)]) == {}  # another resolution, another table


def test_write_units_follow_item_size(make_store):
    store = make_store(block_slots=360)
    rng = random.Random(13)
    values = [rng.uniform(0, 1000) for _ in range(360)]  # full-precision doubles: ~6.8 bytes each in v2 (codec 0x08)
    stats = store.write_slots([("big.m", STEP, DAY + i * STEP, value) for i, value in enumerate(values)])
    size = item_size("big.m", DAY, encode_datapoints(values))
    assert size > 2048 and stats.write_units == math.ceil(size / 1024) == 3
    assert store.fetch_series(["big.m"], STEP, DAY, DAY + 3600) == {"big.m": values}


def test_concurrent_merges_of_one_block_lose_nothing(make_store):
    store = make_store()
    store.ensure_table(store.table_for(DAY, STEP))
    threads = [threading.Thread(target=store.write_slots, args=([("race.m", STEP, DAY + i * STEP, float(i))],))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert store.fetch_series(["race.m"], STEP, DAY, DAY + 80) == {"race.m": [float(i) for i in range(8)]}


@pytest.mark.parametrize("conditional", [True, False])
def test_many_blocks_fit_the_batch_limits(make_store, conditional):
    """More blocks than one BatchWriteItem (25 items) or BatchGetItem (100 keys) takes, over two day
    tables, one block given twice: DynamoDB (and dynalite) refuse a batch over its limit or with
    a key twice, moto takes both."""
    store = make_store(conditional_writes=conditional, block_slots=60)
    span = store.span(STEP)
    midnight = DAY + 86400
    metrics = [f"many.m{i:02d}" for i in range(65)]
    blocks = [(metric, STEP, midnight - span, {59: float(i)}) for i, metric in enumerate(metrics)]
    blocks += [(metric, STEP, midnight, {0: i + 0.5}) for i, metric in enumerate(metrics)]
    stats = store.write_blocks(blocks + [("many.m00", STEP, midnight - span, {59: -1.0})])
    assert stats.items_written == 130 and stats.tables_created == 2
    # merges into all 130 blocks: read back (more than 100 keys) and written again
    stats = store.write_slots([(metric, STEP, midnight - 20, 2.0 * i) for i, metric in enumerate(metrics)]
                              + [(metric, STEP, midnight + 10, 3.0 * i) for i, metric in enumerate(metrics)])
    assert stats.items_written == 130 and stats.items_unchanged == 0
    got = store.fetch_series(metrics, STEP, midnight - 30, midnight + 30)
    expected = {metric: [None, 2.0 * i, float(i), i + 0.5, 3.0 * i, None] for i, metric in enumerate(metrics)}
    expected["many.m00"][2] = -1.0  # the later of the two
    assert got == expected


@pytest.mark.parametrize("prefix, joiner", [("turok metrics", "_"), ("turok", ":"), ("tür", "_"), ("t" * 237, "_")])
def test_a_table_prefix_dynamodb_refuses_is_refused_when_the_store_is_made(make_store, prefix, joiner):
    # DynamoDB (and dynalite) refuse such table names at the first write; moto takes them
    with pytest.raises(ValueError, match="table_prefix"):
        make_store(table_prefix=prefix, table_joiner=joiner)


def test_the_longest_table_names_are_taken(make_store):
    prefix = "t.-" + "x" * 233  # + "_DD-MM-YYYY_3456sec": 255 characters, DynamoDB's most
    store = make_store(table_prefix=prefix)
    assert len(store.table_for(DAY, 3456)) == 255
    assert store.write_slots([("long.m", 3456, DAY, 1.0)]).tables_created == 1
    assert store.fetch_series(["long.m"], 3456, DAY, DAY + 3456) == {"long.m": [1.0]}


def test_put_blocks_writes_whole_new_blocks_without_reading_in_batches_of_25(make_store):
    store = make_store()
    span = store.span(STEP)
    blocks = [(f"put.m{i}", STEP, DAY + (i % 3) * span, {0: float(i), 2: 0.5}) for i in range(30)]
    stats = store.put_blocks(blocks)
    assert stats.items_written == 30 and stats.read_calls == 0 and stats.items_unchanged == 0
    assert stats.write_calls == 2 and stats.write_units == 30 and stats.tables_created == 1
    got = store.fetch_series([f"put.m{i}" for i in range(3)], STEP, DAY, DAY + 3 * span)
    assert got["put.m1"][span // STEP] == 1.0 and got["put.m1"][span // STEP + 2] == 0.5
    assert sum(v is not None for v in got["put.m1"]) == 2
    # what put_blocks stores is what a merge into an absent block stores, byte for byte
    other = make_store()
    other.write_blocks(blocks)
    assert other.fetch_slots(STEP, [(m, s, s + span) for m, _step, s, _v in blocks]) == \
        store.fetch_slots(STEP, [(m, s, s + span) for m, _step, s, _v in blocks])
    assert store.put_blocks([]).write_calls == 0
    with pytest.raises(ValueError):
        store.put_blocks([("a.b", STEP, DAY + STEP, {0: 1.0})])


def test_exclusive_merges_are_batched_reads_and_batch_writes_without_conditions(make_store):
    """A sole writer (turokd holding the partition's lease) merges 60 blocks, 30 of them stored
    already, with one BatchGetItem and three BatchWriteItem: no PutItem per block, even where
    conditional writes are on for everyone else."""
    store = make_store(conditional_writes=True)
    span = store.span(STEP)
    metrics = [f"excl.m{i:02d}" for i in range(30)]
    store.write_blocks([(metric, STEP, DAY, {0: 1.0}) for metric in metrics])
    blocks = [(metric, STEP, DAY, {1: float(i)}) for i, metric in enumerate(metrics)]  # stored: merged
    blocks += [(metric, STEP, DAY + span, {0: i + 0.5}) for i, metric in enumerate(metrics)]  # new
    merged: dict = {}
    stats = store.write_blocks(blocks, assume_new=False, exclusive=True, merged=merged)
    assert stats.items_written == 60 and stats.items_unchanged == 0
    # every merged block handed back whole, as stored now: the caller need not read it again
    slots = span // STEP
    assert merged[("excl.m07", STEP, DAY)] == [1.0, 7.0] + [None] * (slots - 2)
    assert merged[("excl.m07", STEP, DAY + span)] == [7.5] + [None] * (slots - 1) and len(merged) == 60
    assert stats.read_calls == 1 and stats.write_calls == 3 and stats.write_units == 60
    got = store.fetch_series(metrics, STEP, DAY, DAY + span + STEP)
    assert all(got[metric][:2] == [1.0, float(i)] and got[metric][-1] == i + 0.5 for i, metric in enumerate(metrics))
    # a redelivery changes nothing and writes nothing
    again = store.write_blocks(blocks[:5], assume_new=False, exclusive=True)
    assert again.items_written == 0 and again.items_unchanged == 5 and again.write_calls == 0
    # slots too, and through the same flag
    assert store.write_slots([("excl.m00", STEP, DAY + 20, 7.0)], exclusive=True).write_calls == 1
    assert store.fetch_series(["excl.m00"], STEP, DAY, DAY + 30) == {"excl.m00": [1.0, 0.0, 7.0]}


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("assume_new", [True, False])
def test_fill_gaps_sets_only_slots_without_a_stored_value(make_store, conditional, assume_new):
    """An import of history under blocks turokd already wrote: stored slots win, gaps are filled,
    a block nobody wrote is written whole, and importing again writes nothing."""
    store = make_store(conditional_writes=conditional)
    span = store.span(STEP)
    store.write_slots([("fill.m", STEP, DAY + 10, 5.0), ("fill.m", STEP, DAY + 30, 7.0)])  # live data
    imported = [("fill.m", STEP, DAY, {0: 1.0, 1: -1.0, 2: 2.0, 3: -3.0}), ("fill.m", STEP, DAY + span, {1: 4.0})]
    stats = store.write_blocks(imported, assume_new=assume_new, fill_gaps=True)
    assert stats.items_written == 2 and stats.items_unchanged == 0
    got = store.fetch_series(["fill.m"], STEP, DAY, DAY + span + 20)["fill.m"]
    assert got[:5] == [1.0, 5.0, 2.0, 7.0, None] and got[-2:] == [None, 4.0]
    again = store.write_blocks(imported, assume_new=assume_new, fill_gaps=True)
    assert again.items_written == 0 and again.items_unchanged == 2 and again.write_units == 0
    # slots too; without the flag a write still overwrites
    assert store.write_slots([("fill.m", STEP, DAY + 10, 9.0)], fill_gaps=True).items_unchanged == 1
    store.write_slots([("fill.m", STEP, DAY + 10, 9.0)])
    assert store.fetch_series(["fill.m"], STEP, DAY + 10, DAY + 20) == {"fill.m": [9.0]}


@pytest.mark.parametrize("conditional", [True, False])
def test_block_starts_name_every_start_written_and_no_other(make_store, conditional):
    store = make_store(conditional_writes=conditional)
    span = store.span(STEP)
    table = store.table_for(DAY, STEP)
    assert store.block_starts(table) == frozenset()  # no table yet: no block anywhere
    store.put_blocks([("starts.a", STEP, DAY, {0: 1.0})])
    store.write_blocks([("starts.b", STEP, DAY + 2 * span, {1: 2.0})])
    store.write_blocks([("starts.c", STEP, DAY + 3 * span, {1: 2.0})], assume_new=False, exclusive=True)
    store.write_slots([("starts.d", STEP, DAY + 5 * span + STEP, 3.0)])
    store.write_blocks([("starts.a", STEP, DAY, {0: 1.0})])  # a redelivery: nothing new
    assert store.block_starts(table) == frozenset({DAY, DAY + 2 * span, DAY + 3 * span, DAY + 5 * span})
    # each table has its own record
    assert store.block_starts(store.table_for(DAY + 86400, STEP)) == frozenset()


MINUTE = 60


@pytest.mark.parametrize("conditional", [True, False])
def test_a_block_longer_than_the_grid_is_written_merged_and_read_whole(make_store, conditional):
    # coarse archives' blocks (coarse_block_span): 12 h of 1-minute slots on a 6-hour grid
    store = make_store(conditional_writes=conditional)
    assert store.span(MINUTE) == 360 * MINUTE
    half = DAY + 360 * MINUTE
    first = {i: float(i) for i in range(0, 720, 7)}
    store.put_blocks([("a.b", MINUTE, DAY, first)])
    # a merge sets slots in both halves and keeps every stored slot: nothing cut to the grid
    store.write_blocks([("a.b", MINUTE, DAY, {1: -1.0, 700: -2.0})], assume_new=False)
    store.write_blocks([("a.b", MINUTE, DAY, {2: -3.0})], exclusive=True, assume_new=False)
    expected = dict(first)
    expected.update({1: -1.0, 700: -2.0, 2: -3.0})
    row = [expected.get(i) for i in range(720)]
    assert store.fetch_series(["a.b"], MINUTE, DAY, DAY + 720 * MINUTE) == {"a.b": row}
    # a range starting after the grid's cell boundary still finds the block that began before it
    assert store.fetch_series(["a.b"], MINUTE, half, half + 360 * MINUTE) == {"a.b": row[360:]}
    assert store.fetch_slots(MINUTE, [("a.b", half + 600, half + 660)]) == {
        "a.b": {DAY + i * MINUTE: v for i, v in expected.items()}}
    # a merge of a short row into the long block leaves its other slots as they were
    stats = store.write_blocks([("a.b", MINUTE, DAY, {700: -2.0})], assume_new=False)
    assert stats.items_unchanged == 1
    assert store.fetch_series(["a.b"], MINUTE, DAY, DAY + 720 * MINUTE) == {"a.b": row}


def test_a_block_may_not_pass_its_day_or_start_off_the_grid(make_store):
    store = make_store()
    evening = DAY + 18 * 3600  # the last 6-hour grid cell of the day: 360 slots left
    with pytest.raises(ValueError):
        store.write_blocks([("a.b", MINUTE, evening, {360: 1.0})])
    with pytest.raises(ValueError):
        store.put_blocks([("a.b", MINUTE, evening, [1.0] * 361)])
    with pytest.raises(ValueError):
        store.put_blocks([("a.b", MINUTE, DAY + 3600, {0: 1.0})])
    store.put_blocks([("a.b", MINUTE, evening, [1.0] * 360)])  # up to midnight is fine
    assert store.fetch_series(["a.b"], MINUTE, evening, DAY + 86400) == {"a.b": [1.0] * 360}


def test_where_legacy_blocks_overlap_a_longer_one_the_earlier_starting_wins(make_store):
    # before coarse blocks grew, 1-minute coarse blocks were 360 slots: an upgrade mid-day leaves a
    # legacy block at 06:00 beside a new 720-slot block from 00:00 (the newer: it wins where it has values)
    store = make_store()
    half = DAY + 360 * MINUTE
    store.put_blocks([("a.b", MINUTE, half, {0: 10.0, 1: 11.0, 2: 12.0, 5: 15.0})])
    store.put_blocks([("a.b", MINUTE, DAY, {360: 20.0, 362: 22.0, 100: 1.0})])
    want = [None] * 720
    want[100], want[360], want[361], want[362], want[365] = 1.0, 20.0, 11.0, 22.0, 15.0
    for _ in range(2):  # reads in either order of the answers
        assert store.fetch_series(["a.b"], MINUTE, DAY, DAY + 720 * MINUTE) == {"a.b": want}
        assert store.fetch_series(["a.b"], MINUTE, half, half + 10 * MINUTE) == {"a.b": want[360:370]}
        assert store.fetch_slots(MINUTE, [("a.b", half, half + 600)]) == {
            "a.b": {DAY + i * MINUTE: v for i, v in enumerate(want) if v is not None}}
