"""turokd owning its metrics (``owned_since``): new blocks put without a read, coarse blocks from memory.

Every test compares the tables with those of the old way (everything merged and rolled up from
the stored finer slots, ``process_batch``) byte for byte, on in-memory stores.
"""
from __future__ import annotations

import contextlib
import random
from array import array

import pytest

from tests.support.turokd_batch import process_batch
from tests.turokd.test_rollups import AGGREGATION, MIDNIGHT, NAMES, SCHEMAS, received
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.storage.memory import MemoryBlockStore
from turok_core.turokd import block_writer
from turok_core.turokd.block_writer import BlockWriter
from turok_core.turokd.coarse_blocks import CoarseBlock
from turok_core.turokd.fresh import BASE, FreshBlocks
from turok_core.turokd.rollup import rollup_slots
from turok_core.turokd.rollup_writer import RollupPlan
from turok_core.turokd.start_snapshots import StartSnapshots
from turok_core.wire.codec import encode_messages

BLOCK_SLOTS = 6  # blocks of 60 s at 10 s, 6 min at 1 min (an hour slot straddles ten), 6 h at 1 h
DELAY = 5


class CountingStore(MemoryBlockStore):
    """Counts the calls that read DynamoDB or merge into it."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.reads = self.merges = self.puts = self.exclusive_merges = self.largest_put = 0
        self.read_steps: set[int] = set()

    def fetch_slots(self, step, ranges, consistent=False):
        self.reads += 1
        self.read_steps.add(step)
        return super().fetch_slots(step, ranges, consistent)

    def write_blocks(self, blocks, assume_new=True, exclusive=False, fill_gaps=False, merged=None):
        blocks = list(blocks)
        self.merges += len(blocks)
        self.exclusive_merges += len(blocks) if exclusive else 0
        return super().write_blocks(blocks, assume_new, exclusive, fill_gaps, merged)

    def put_blocks(self, blocks):
        blocks = list(blocks)
        self.puts += len(blocks)
        self.largest_put = max(self.largest_put, len(blocks))
        return super().put_blocks(blocks)

    def tables(self) -> dict:
        return {name: dict(items) for name, items in self._tables.items() if items}


@pytest.fixture
def config(tmp_path):
    (tmp_path / "schemas.conf").write_text(SCHEMAS)
    (tmp_path / "aggregation.conf").write_text(AGGREGATION)
    return TurokConfig(table_prefix="fresh", schemas_file=str(tmp_path / "schemas.conf"),
                       aggregation_file=str(tmp_path / "aggregation.conf"), block_slots=BLOCK_SLOTS,
                       block_close_delay_seconds=DELAY)


def flushes(schemas, seconds: int, seed: int = 5):
    """``(arrival, [TurokMessage])`` per 10 s flush, 12 s after the slot, across a midnight."""
    rng = random.Random(seed)
    for slot in range(MIDNIGHT - seconds // 2, MIDNIGHT + seconds // 2, 10):
        yield slot + 12, [TurokMessage(name, slot, [round(rng.uniform(0, 100), 2)], 10,
                                       schemas.policy_for(name).aggregation_type)
                          for name in NAMES if rng.random() < 0.7]


def reference(config, schemas, batches) -> dict:
    store = CountingStore(config)
    for n, bodies in enumerate(batches):
        process_batch(received(bodies, f"ref{n}"), store, schemas)
    return store.tables()


def run_stream(config, schemas, owned_since, replays=(), records_since=None, before=()):
    """Feed the flushes on a simulated clock, closing after each; ``replays`` are flush numbers
    whose bodies come again 200 s later (late data into closed blocks). ``records_since``: the
    writer also trusts the records of block starts (``start_snapshots.py``); ``before``: message
    bodies another writer stored first."""
    store = CountingStore(config)
    for n, bodies in enumerate(before):
        if isinstance(bodies, tuple):  # slots of a writer that died before its coarse blocks
            store.write_slots(bodies)
        else:
            process_batch(received(bodies, f"before{n}"), store, schemas)
    store.reads = store.merges = store.puts = store.exclusive_merges = 0
    now = [MIDNIGHT - 3600.0]
    snapshots = StartSnapshots(store, records_since) if records_since is not None else None
    writer = BlockWriter(store, config, schemas, clock=lambda: now[0], owned_since=owned_since,
                         unwritten=snapshots)  # as the service wires it
    store.snapshots = snapshots
    sent = list(flushes(schemas, 3600))
    late: dict[int, list[str]] = {}
    for n, (arrival, messages) in enumerate(sent):
        now[0] = arrival
        bodies = encode_messages(messages)
        writer.hold(received(bodies, f"a{n}"))
        if n in replays:
            late[n + 20] = bodies
        if n in late:
            writer.hold(received(late.pop(n), f"late{n}"))
        writer.close()
    writer.close_all()
    return store, [encode_messages(m) for _a, m in sent]


def test_owned_metrics_are_put_without_a_read_and_rolled_up_from_memory_as_whisper_would(config):
    schemas = load_schemas(config)
    store, batches = run_stream(config, schemas, owned_since=lambda metric: 0.0)
    assert store.tables() == reference(config, schemas, batches)
    # not a read and not a merge: every block, fine or coarse, put whole once
    assert store.reads == 0 and store.merges == 0 and store.puts > 0
    # one put per stored item
    assert store.puts == sum(len(items) for items in store.tables().values())


def test_blocks_closing_together_are_put_a_chunk_at_a_time(config, monkeypatch):
    """A boundary closes every metric's block at once: they are encoded and sent in chunks, so
    the items of all of them are never held together, and the tables are the same."""
    monkeypatch.setattr(block_writer, "PUT_CHUNK", 2)
    coarse_chunks: list[int] = []  # coarse blocks are finished (their slots decoded) a chunk at a time too
    write_coarse = BlockWriter._write_coarse

    def counted(self, due, result, settled_at):
        coarse_chunks.append(len(due))
        return write_coarse(self, due, result, settled_at)
    monkeypatch.setattr(BlockWriter, "_write_coarse", counted)
    schemas = load_schemas(config)
    store, batches = run_stream(config, schemas, owned_since=lambda metric: 0.0)
    assert store.largest_put == 2 and store.merges == 0
    assert max(coarse_chunks) == 2
    assert store.tables() == reference(config, schemas, batches)


def test_without_ownership_every_block_is_merged_and_rolled_up_from_dynamodb(config):
    schemas = load_schemas(config)
    for owned_since in (None, lambda metric: None, lambda metric: MIDNIGHT + 86400.0):
        store, batches = run_stream(config, schemas, owned_since)
        assert store.puts == 0 and store.reads > 0
        # another writer may exist: every merge is a conditional put, unless nothing is held
        assert store.exclusive_merges == (0 if owned_since is None or owned_since("m") is None else store.merges)
        assert store.tables() == reference(config, schemas, batches)


def test_late_data_and_a_lease_taken_mid_stream_are_merged_and_still_give_the_same_tables(config):
    schemas = load_schemas(config)
    # owned since half an hour in: earlier blocks (and coarse blocks begun earlier) are merged
    lease = MIDNIGHT - 1800.0
    store, batches = run_stream(config, schemas, owned_since=lambda metric: lease, replays={40, 200, 201, 300})
    assert store.puts > 0 and store.merges > 0 and store.reads > 0
    # the partition is held: what is merged is merged in batches without conditions
    assert store.exclusive_merges == store.merges
    assert store.tables() == reference(config, schemas, batches)


def test_a_lease_younger_than_the_data_puts_unrecorded_blocks_and_rolls_up_from_memory(config):
    # the data is older than the lease (a restart, a lease move, history sent late): the tables'
    # records of block starts, read once the lease was held, prove every block absent
    schemas = load_schemas(config)
    lease = MIDNIGHT + 86400.0
    store, batches = run_stream(config, schemas, owned_since=lambda metric: lease,
                                records_since=lambda metric: lease)
    assert store.tables() == reference(config, schemas, batches)
    assert store.reads == 0 and store.merges == 0
    assert store.puts == sum(len(items) for items in store.tables().values())
    # one record read per table, not per block
    assert store.snapshots.reads == len(store.tables())
    # without the records, the same stream reads and merges (the test's other half)
    store, _batches = run_stream(config, schemas, owned_since=lambda metric: lease)
    assert store.puts == 0 and store.reads > 0


@pytest.mark.parametrize("rolled_up", [True, False])
def test_a_block_another_writer_stored_first_is_merged_not_replaced(config, rolled_up):
    schemas = load_schemas(config)
    sent = {(m.metric, m.start_time) for _a, messages in flushes(schemas, 3600) for m in messages}
    name = NAMES[0]
    # a slot the stream leaves empty, stored by a previous owner: a put whole would drop it; one
    # that died before writing its coarse blocks left only the finer one, which the coarse block
    # must then be rolled up from (not computed from this turokd's blocks alone)
    slot = next(t for t in range(MIDNIGHT - 1200, MIDNIGHT, 10) if (name, t) not in sent)
    message = encode_messages([TurokMessage(name, slot, [777.0], 10, schemas.policy_for(name).aggregation_type)])
    before = [message if rolled_up else ((name, 10, slot, 777.0),)]
    lease = MIDNIGHT + 86400.0
    store, batches = run_stream(config, schemas, owned_since=lambda metric: lease, replays={40, 200},
                                records_since=lambda metric: lease, before=before)
    assert store.tables() == reference(config, schemas, [message] + batches)
    assert store.puts > 0 and store.merges > 0 and store.reads > 0
    # the record read after the lease names that start: merged without conditions, as held
    assert store.exclusive_merges == store.merges


def test_a_coarse_slot_straddling_finer_blocks_is_whispers_aggregate_of_both():
    # hour slots over 1-minute blocks of 25 minutes: the hour slots straddle blocks
    plan = RollupPlan("m", 0, 60, 3600, 0, 7200, "average", 0.5)
    block = CoarseBlock(plan, 0.0, values=array("d", [float("nan")] * 2))
    rng = random.Random(1)
    finer: dict[int, float] = {}
    for start in range(0, 7200, 1500):
        values = [rng.choice([float("nan"), rng.uniform(0, 9)]) for _ in range(1500 // 60)]
        finer.update({start + i * 60: v for i, v in enumerate(values) if v == v})
        block.add_finer(start, values)
    assert sorted(block.partial) == [0, 1]  # both hour slots straddle two blocks
    got = [(i * 3600, v) for i, v in enumerate(block.finish()) if v == v]
    assert got
    assert got == rollup_slots(finer, 60, 3600, [0, 3600], "average", 0.5)


def test_a_pending_coarse_block_is_kept_encoded_between_finer_blocks():
    """A 1-minute block waits six hours for its 10 s blocks: between them it holds its slots as
    the bytes it will be stored as, not 360 doubles, and finishes with the same values."""
    plan = RollupPlan("m", 0, 10, 60, 0, 21600, "average", 0.5)
    block = CoarseBlock(plan, 0.0, values=array("d", [float("nan")] * 360))
    rng = random.Random(2)
    finer: dict[int, float] = {}
    for start in (0, 4320, 8640):  # three of its five 72-minute blocks, gaps and -0.0 among them
        values = [rng.choice([float("nan"), -0.0, round(rng.uniform(0, 100), 2)]) for _ in range(432)]
        finer.update({start + i * 10: v for i, v in enumerate(values) if v == v})
        block.add_finer(start, values)
        assert isinstance(block.values, bytes) and len(block.values) < 360 * 8 // 2
    got = [(i * 60, v) for i, v in enumerate(block.finish()) if v == v]
    # finishing keeps it encoded (a boundary's blocks are finished a chunk at a time, and a failed
    # write finishes it again, alike)
    assert isinstance(block.values, bytes)
    assert [(i * 60, v) for i, v in enumerate(block.finish()) if v == v] == got
    expected = rollup_slots(finer, 10, 60, range(0, 21600, 60), "average", 0.5)
    assert len(got) > 150  # 216 slots fed, some below the xFilesFactor
    assert [(t, repr(v)) for t, v in got] == [(t, repr(v)) for t, v in expected]  # bit for bit, -0.0 too


def test_fresh_blocks_need_ownership_since_the_block_began_and_no_earlier_write():
    fresh = FreshBlocks(lambda metric: 100.0 if metric == "a" else None, keep_seconds=1000)
    assert fresh.fresh(BASE, "a", 10, 100) and not fresh.fresh(BASE, "a", 10, 90)
    assert not fresh.fresh(BASE, "b", 10, 100)  # ownership unknown
    fresh.mark(BASE, 10, [100, 200])
    assert not fresh.fresh(BASE, "a", 10, 100) and fresh.fresh(BASE, "a", 60, 100)
    fresh.forget_before(1150)  # 100 forgotten: everything up to it is merged from now on
    assert fresh.written(BASE, 10, 100) and fresh.written(BASE, 10, 50) and fresh.written(BASE, 10, 200)
    assert not fresh.written(BASE, 10, 300)
    assert not FreshBlocks().owned("a", 10**10)


def test_late_slots_for_closed_blocks_are_merged_once_per_block_not_once_per_batch(config):
    """A spool draining: slot by slot, 1.5 s apart, into blocks closed long ago."""
    schemas = load_schemas(config)
    names = [f"late{m}.cpu" for m in range(10)]
    flushes = [encode_messages([TurokMessage(name, MIDNIGHT + 10 * s, [float(m + s)], 10, "average")
                                for m, name in enumerate(names)]) for s in range(18)]  # 3 blocks of 6 slots
    at_once = CountingStore(config)
    writer = BlockWriter(at_once, config, schemas, clock=lambda: MIDNIGHT + 7200.0, owned_since=lambda m: 0.0)
    for n, bodies in enumerate(flushes):
        writer.hold(received(bodies, f"o{n}"))
    once = writer.close().stats.write_units + writer.close_all().stats.write_units

    late = CountingStore(config)
    now = [MIDNIGHT + 7200.0]
    writer = BlockWriter(late, config, schemas, clock=lambda: now[0], owned_since=lambda m: 0.0)
    units = 0
    for n, bodies in enumerate(flushes):
        writer.hold(received(bodies, f"l{n}"))
        units += writer.close().stats.write_units
        now[0] += 1.5
    # each block closed before its first slot came: it is written once, 10 s after its last
    # slot (the first block's six messages went then); the other two blocks' still wait
    assert writer.open.held_messages == 12
    now[0] += config.late_merge_delay_seconds
    units += writer.close().stats.write_units + writer.close_all().stats.write_units
    assert late.tables() == at_once.tables()
    # each base block put once, with all its slots; the minute block holding all three put with
    # the first and recomputed from DynamoDB when the other two were written (before their
    # messages went)
    assert late.puts == 3 * len(names) + len(names), late.puts
    assert late.merges == len(names), late.merges
    assert writer.open.held_messages == 0
    assert units <= 1.25 * once


def test_a_coarse_block_over_finer_blocks_another_writer_left_is_rolled_up_from_them(config):
    # a previous owner wrote a 10 s and a 1-minute block three hours before the stream and died
    # before the hourly block over them closed: this turokd's hourly block (midnight − 6 h to
    # midnight) must be rolled up from that 1-minute block too, not from its own blocks alone
    schemas = load_schemas(config)
    name = "host0.count"  # summed, xFilesFactor 0: one known minute makes the hour
    old = MIDNIGHT - 3 * 3600
    before = [((name, 10, old, 777.0), (name, 60, old, 777.0))]
    lease = MIDNIGHT + 86400.0
    with_records, _batches = run_stream(config, schemas, owned_since=lambda metric: lease,
                                        records_since=lambda metric: lease, before=before)
    read_back, _batches = run_stream(config, schemas, owned_since=lambda metric: lease, before=before)
    assert with_records.tables() == read_back.tables()
    hour = with_records.fetch_series([name], 3600, old, old + 3600)[name][0]
    assert hour is not None and hour >= 777.0
    assert with_records.puts > 0  # the 10 s blocks of the stream were still put whole


def test_each_close_asks_the_ownership_hooks_once_per_metric_and_block(config, monkeypatch):
    """A close used to ask ``owned_since`` and ``records_since`` (a lock and a CRC of the name each
    in the service) for every block and coarse plan of a metric; now once per metric and close,
    with the same tables."""
    schemas = load_schemas(config)
    lease = MIDNIGHT + 86400.0
    asked: list = []
    closes = [0]
    real_close = BlockWriter.close

    def counting_close(self, now=None):
        closes[0] += 1
        return real_close(self, now)

    def owned_since(metric):
        asked.append(("owned", closes[0], metric))
        return lease

    monkeypatch.setattr(BlockWriter, "close", counting_close)
    def records_since(metric):
        asked.append(("records", closes[0], metric))
        return lease

    store, batches = run_stream(config, schemas, owned_since=owned_since, records_since=records_since)
    assert store.tables() == reference(config, schemas, batches)
    assert store.reads == 0 and store.merges == 0
    assert {key[0] for key in asked} == {"owned", "records"}
    assert asked and len(asked) == len(set(asked))  # once per metric and close
    once = len(asked)
    # asked every time, as before: the same tables, several times the questions
    asked.clear()
    monkeypatch.setattr(FreshBlocks, "one_view", lambda self: contextlib.nullcontext())
    monkeypatch.setattr(StartSnapshots, "one_view", lambda self: contextlib.nullcontext())
    store, _batches = run_stream(config, schemas, owned_since=owned_since, records_since=records_since)
    assert store.tables() == reference(config, schemas, batches)
    assert len(asked) >= 2 * once


def test_one_view_ends_with_the_close_so_a_lease_change_is_seen_by_the_next():
    owner = {"a": 100.0}
    fresh = FreshBlocks(lambda metric: owner.get(metric), keep_seconds=1000)
    with fresh.one_view():
        assert fresh.sole("a", 10, 100)
        del owner["a"]  # the lease lost mid-close: this close keeps the view it began with
        assert fresh.sole("a", 10, 200) and fresh.held("a", 200)
    assert not fresh.sole("a", 10, 300) and not fresh.held("a", 300)


def test_start_snapshots_ask_records_since_once_per_metric_within_a_view():
    class Records:
        def table_for(self, timestamp, step):
            return f"t{step}"

        def block_starts(self, table):
            return frozenset({100})

    since: dict = {"a": 50.0}
    asked: list = []

    def records_since(metric):
        asked.append(metric)
        return since.get(metric)

    snapshots = StartSnapshots(Records(), records_since)
    with snapshots.one_view():
        assert snapshots("a", 10, 200) and not snapshots("a", 10, 100) and snapshots("a", 60, 300)
        since.clear()  # the lease lost mid-close: this close keeps the view it began with
        assert snapshots("a", 10, 400)
    assert asked == ["a"]
    assert not snapshots("a", 10, 500)  # the next close asks again
