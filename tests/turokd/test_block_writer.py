"""turokd's core on a simulated clock against the moto server: each block written once when it
closes, messages deleted only after, rollups at close, and fresh reads equal to the final data."""
from __future__ import annotations

import random

import pytest

from tests.conftest import with_schema_files
from tests.support.turokd_batch import process_batch
from tests.turokd.test_rollups import AGGREGATION, MIDNIGHT, NAMES, SCHEMAS, received, snapshot
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.runtime.aws import make_client
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.series_reader import SeriesReader
from turok_core.storage.tables import BlockStore
from turok_core.turokd.block_writer import BlockWriter
from turok_core.wire.codec import encode_messages

BLOCK_SLOTS = 6  # blocks of 60 s at 10 s, 6 min at 1 min, 6 h at 1 h
DELAY = 5
RANGE = (MIDNIGHT - 3600, MIDNIGHT + 3600)  # aligned to every archive's step


@pytest.fixture
def config(turok_config, tmp_path):
    return with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION).replace(
        block_slots=BLOCK_SLOTS, block_close_delay_seconds=DELAY)


class OpenBlocksCache:
    """The cache query answered in process from a writer's open blocks (what turokd's HTTP does)."""

    def __init__(self, writer: BlockWriter) -> None:
        self.writer = writer

    def query(self, metrics, start, until):
        return {metric: {step: dict(map(tuple, slots)) for step, slots in steps.items()}
                for metric, steps in self.writer.open.points(metrics, start, until).items()}


def stream(schemas, seconds: int, seed: int = 7):
    """``(arrival time, [TurokMessage])`` per 10 s flush: gateways' windows, 12 s after their slot."""
    rng = random.Random(seed)
    for slot in range(MIDNIGHT - seconds // 2, MIDNIGHT + seconds // 2, 10):
        messages = [TurokMessage(name, slot, [round(rng.uniform(0, 100), 2)], 10,
                                 schemas.policy_for(name).aggregation_type)
                    for name in NAMES if rng.random() < 0.8]
        yield slot + 12, messages


def test_each_block_is_written_once_when_it_closes_and_messages_wait_for_it(config):
    schemas = load_schemas(config)
    store = BlockStore(make_client("dynamodb", config), config)
    now = [MIDNIGHT - 1800.0]
    writer = BlockWriter(store, config, schemas, clock=lambda: now[0])
    reader = SeriesReader(store, config, schemas, cache=OpenBlocksCache(writer), clock=lambda: now[0])
    sent: dict[str, int] = {}  # receipt → arrival
    deleted: dict[str, float] = {}
    written_items = unchanged = 0
    checks = 0
    for n, (arrival, messages) in enumerate(stream(schemas, 3600)):
        now[0] = arrival
        if messages:
            receipt = f"r{n}"
            writer.hold(received(encode_messages(messages), receipt))
            sent[f"{receipt}.0"] = arrival
        closed = writer.close()
        written_items += closed.stats.items_written
        unchanged += closed.stats.items_unchanged
        for handle in closed.deletable:
            deleted[handle] = now[0]
        if n % 50 == 25:  # mid-stream, every archive already answers with the newest data
            checks += 1
            fresh = {step: reader.read(NAMES, step, *RANGE) for step in (10, 60, 3600)}
            expected, last_check = fresh, now[0]
    final = writer.close_all()  # at shutdown, what is still open is written early
    written_items += final.stats.items_written
    assert checks >= 3
    # every message was deleted, none before the blocks it fed closed (its slot's block end + delay)
    assert set(deleted) | set(final.deletable) == set(sent) and len(final.deletable) <= 6
    for handle, arrival in sent.items():
        if handle in final.deletable:
            continue
        slot = arrival - 12
        assert deleted[handle] >= slot - slot % 60 + 60 + DELAY

    # one write per block: base blocks once, coarse blocks once per close (a 1-hour block's 6-hour span
    # is written at close_all only), nothing rewritten
    data = snapshot(config)
    base_blocks = sum(len(items) for name, items in data.items() if name.endswith("10sec"))
    minute_blocks = sum(len(items) for name, items in data.items() if name.endswith("1min"))
    hour_blocks = sum(len(items) for name, items in data.items() if name.endswith("_1h"))
    assert unchanged == 0
    assert written_items == base_blocks + minute_blocks + hour_blocks

    # the same messages written at once, the old way, give the very same tables
    reference = config.replace(table_prefix=config.table_prefix + "ref")
    ref_store = BlockStore(make_client("dynamodb", reference), reference)
    batch = [body for _arrival, messages in stream(schemas, 3600) if messages for body in encode_messages(messages)]
    process_batch(received(batch, "ref"), ref_store, schemas, reference)
    assert snapshot(reference) == data

    # the fresh reads answered from data not yet written: the open 10 s block, and the hour (6-hour
    # blocks close long after) rolled up from minutes themselves rolled up from held 10 s slots
    open_slot = int(last_check) - 12 - 10
    assert expected[10]["host0.count"][(open_slot - RANGE[0]) // 10] is not None
    assert expected[3600]["host0.count"][(open_slot - RANGE[0]) // 3600] is not None
    # what the last mid-stream read saw of complete slots, in every archive, is what is finally stored
    for step, series in expected.items():
        stored = reader.read(NAMES, step, *RANGE)
        for name in NAMES:
            for index, value in enumerate(series[name]):
                # a slot whose every point had arrived (12 s after its end) already showed its final value
                if value is not None and RANGE[0] + index * step + step + 12 <= last_check:
                    assert stored[name][index] == value, (name, step, index)


def test_a_failed_write_keeps_blocks_messages_and_rollups_for_the_next_close(config):
    schemas = load_schemas(config)

    class FlakyStore(MemoryBlockStore):
        """Fails the first coarse write, after the base blocks were written."""
        failures = 1

        def write_blocks(self, blocks, assume_new=True, exclusive=False, fill_gaps=False, merged=None):
            blocks = list(blocks)
            if self.failures and any(step == 60 for _metric, step, _start, _values in blocks):
                self.failures -= 1
                raise RuntimeError("DynamoDB throttled us")
            return super().write_blocks(blocks, assume_new, exclusive, fill_gaps, merged)

    store = FlakyStore(config)
    config = config.replace(late_merge_delay_seconds=0)  # closed blocks are written at the next close
    writer = BlockWriter(store, config, schemas, clock=lambda: MIDNIGHT + 3600)
    messages = [TurokMessage("host0.count", MIDNIGHT + 10 * i, [1.0], 10, "sum") for i in range(6)]
    writer.hold(received(encode_messages(messages), "a"))
    with pytest.raises(RuntimeError):
        writer.close()
    assert writer.open.held_messages == 1  # not deletable: its rollup is not written
    closed = writer.close()
    assert closed.deletable == ["a.0"] and closed.rollup_slots >= 1
    assert store.fetch_series(["host0.count"], 60, MIDNIGHT, MIDNIGHT + 60) == {"host0.count": [6.0]}
    assert closed.stats.items_unchanged == 1  # the base block, already stored, was not rewritten


def test_two_writers_sharing_the_queue_and_every_message_replayed_give_the_same_tables(config):
    """Two turokd cores take alternate SQS messages (and each sees every message a second time,
    a redelivery), holding parts of the same blocks and closing them at the same moments in
    parallel threads: the tables equal those of one writer that saw each message once."""
    import threading

    schemas = load_schemas(config)
    now = [MIDNIGHT - 1800.0]
    writers = [BlockWriter(BlockStore(make_client("dynamodb", config), config), config, schemas,
                           clock=lambda: now[0]) for _ in range(2)]
    flushes = list(stream(schemas, 1800, seed=11))
    for n, (arrival, messages) in enumerate(flushes):
        now[0] = arrival
        if messages:
            body = encode_messages(messages)
            writers[n % 2].hold(received(body, f"a{n}"))
            if n >= 3:  # the redelivery of an earlier message reaches the other writer
                _arrival, earlier = flushes[n - 3]
                if earlier:
                    writers[(n + 1) % 2].hold(received(encode_messages(earlier), f"b{n}"))
        errors = []

        def close(writer):
            try:
                writer.close()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
        threads = [threading.Thread(target=close, args=(w,)) for w in writers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
    for writer in writers:
        writer.close_all()

    reference = config.replace(table_prefix=config.table_prefix + "one")
    one = BlockWriter(BlockStore(make_client("dynamodb", reference), reference), reference, schemas,
                      clock=lambda: now[0])
    one.hold(received([b for _a, m in flushes if m for b in encode_messages(m)], "ref"))
    one.close_all()
    assert snapshot(config) == snapshot(reference)
