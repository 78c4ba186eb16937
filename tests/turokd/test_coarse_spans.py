"""Coarse archives' blocks at the default settings (``block_layout.coarse_block_span``): turokd
writes 432-slot 10 s blocks and 720-slot 1-minute blocks for the default schema, never a 1-minute
block of the grid's 360 slots beside them, also for old points sent straight to the 1-minute
archive; the fresh read before the blocks close equals the read after; memory store and moto."""
from __future__ import annotations

import calendar
import random
import uuid

import pytest

from tests.conftest import with_schema_files
from tests.turokd.test_block_writer import OpenBlocksCache
from tests.turokd.test_rollups import received
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.runtime.aws import make_client
from turok_core.storage.block_layout import decode_datapoints
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.series_reader import SeriesReader
from turok_core.storage.table_names import parse_table_name
from turok_core.storage.tables import BlockStore
from turok_core.turokd.block_writer import BlockWriter
from turok_core.wire.codec import encode_messages

DAY = calendar.timegm((2024, 3, 2, 0, 0, 0))
SCHEMAS = "[all]\npattern = .*\nretentions = 10s:1d,1min:30d,1h:2y\n"  # the shipped default
AGGREGATION = "[max]\npattern = [.]max$\naggregationMethod = max\nxFilesFactor = 0\n\n" \
              "[all]\npattern = .*\naggregationMethod = average\nxFilesFactor = 0.5\n"
NAMES = ["a.cpu", "a.max", "b.cpu"]
OLD = "old.only"  # sends nothing at 10 s: one 1-minute point, as a replay of old data would
HOURS = 13  # past the first 1-minute block's close (12 h + the close delay)


def stored_items(store, config) -> list[tuple[str, int, int, list]]:
    """``(metric, step, block start, slot values)`` of every stored item."""
    if isinstance(store, MemoryBlockStore):
        found = [(table, metric, start, decode_datapoints(blob))
                 for table in store.table_names() for (metric, start), blob in store._tables[table].items()]
    else:
        client = make_client("dynamodb", config)
        found = [(table, item["metric"]["S"], int(item["start_time"]["N"]), decode_datapoints(item["datapoints"]["B"]))
                 for table in store.table_names() if table.startswith(config.table_prefix)
                 for item in client.scan(TableName=table, ConsistentRead=True)["Items"] if "datapoints" in item]
    return [(metric, parse_table_name(table, config.table_prefix, config.table_joiner).step, start, values)
            for table, metric, start, values in found]


@pytest.fixture(params=["memory", "moto"])
def store_and_config(request, tmp_path):
    if request.param == "memory":
        base = TurokConfig(table_prefix=f"m{uuid.uuid4().hex[:8]}", cache_hosts="")
    else:
        base = request.getfixturevalue("turok_config")
    config = with_schema_files(base, tmp_path, SCHEMAS, AGGREGATION)
    assert config.block_slots == 0 and config.coarse_block_slots == 0  # the defaults
    if request.param == "memory":
        return MemoryBlockStore(config), config
    return BlockStore(make_client("dynamodb", config), config), config


@pytest.mark.parametrize("owned", [True, False], ids=["coarse from memory", "coarse from DynamoDB"])
def test_default_spans_720_one_minute_slots_and_reads_equal_the_data(store_and_config, owned):
    store, config = store_and_config
    schemas = load_schemas(config)
    now = [float(DAY)]
    writer = BlockWriter(store, config, schemas, clock=lambda: now[0], route_old=True,
                         owned_since=(lambda metric: 0.0) if owned else None)
    reader = SeriesReader(store, config, schemas, cache=OpenBlocksCache(writer), clock=lambda: now[0])
    rng = random.Random(13)
    sent: dict[str, dict[int, float]] = {name: {} for name in NAMES}
    fresh_reads = {}
    for n, flush in enumerate(range(DAY, DAY + HOURS * 3600, 1800)):  # half an hour of 10 s windows at a time
        messages = []
        for slot in range(flush, flush + 1800, 10):
            for name in NAMES:
                if rng.random() < 0.9:
                    value = round(rng.uniform(0, 100), 2) if name != "b.cpu" else rng.uniform(-1e6, 1e6)
                    sent[name][slot] = value
                    messages.append(TurokMessage(name, slot, [value], 10, schemas.policy_for(name).aggregation_type))
        if flush == DAY + 7 * 3600:  # an old point straight into the 1-minute archive, inside its 6-18 h grid cell
            messages.append(TurokMessage(OLD, DAY + 7 * 3600 + 120, [42.0], 60, "average"))
        now[0] = flush + 1800 + 12
        writer.hold(received(encode_messages(messages), f"r{n}"))
        writer.close()
        if flush == DAY + 11 * 3600:  # the first 1-minute block still pending, its 10 s blocks partly open
            fresh_reads = {step: reader.read(NAMES + [OLD], step, DAY, DAY + 12 * 3600) for step in (10, 60)}
    writer.close_all()
    now[0] = DAY + 3 * 86400  # everything written: what DynamoDB holds alone
    items = stored_items(store, config)
    one_minute = {(metric, start): values for metric, step, start, values in items if step == 60}
    assert {start for _metric, start in one_minute} == {DAY, DAY + 12 * 3600}  # 720-slot blocks, no 360-slot one
    assert max(len(values) for values in one_minute.values()) > 360
    assert all(len(values) <= 720 for values in one_minute.values())
    assert one_minute[(OLD, DAY)][420 + 2] == 42.0 and sum(v is not None for v in one_minute[(OLD, DAY)]) == 1
    ten = {start for _metric, step, start, _values in items if step == 10}
    assert all((start - DAY) % 4320 == 0 for start in ten) and len(ten) == -(-HOURS * 3600 // 4320)
    assert {start for _metric, step, start, _values in items if step == 3600} == {DAY}

    stored = {step: reader.read(NAMES + [OLD], step, DAY, DAY + 12 * 3600) for step in (10, 60)}
    # the finder's view before the blocks closed (data sent until 11:30) is what was stored
    for step, rows in fresh_reads.items():
        sent_until = (int(11.5 * 3600)) // step
        # (old points held for a coarse archive are not asked of the cache: only base archives are)
        assert {name: rows[name][:sent_until] for name in NAMES} == \
            {name: stored[step][name][:sent_until] for name in NAMES}
        assert any(v is not None for v in rows["a.cpu"][360 * 60 // step:sent_until])  # past the 6 h grid cell
    for name in NAMES:
        assert stored[10][name] == [sent[name].get(t) for t in range(DAY, DAY + 12 * 3600, 10)]
        row = stored[60][name]
        for minute in range(720):
            known = [sent[name][t] for t in range(DAY + minute * 60, DAY + minute * 60 + 60, 10) if t in sent[name]]
            if name.endswith(".max"):
                assert row[minute] == max(known)
            elif len(known) >= 3:
                assert row[minute] == pytest.approx(sum(known) / len(known), rel=1e-12, abs=1e-9)
            else:
                assert row[minute] is None  # below the xFilesFactor
    assert stored[60][OLD][420 + 2] == 42.0


@pytest.mark.parametrize("edit_at_hours", [6, 8])
def test_a_schema_edit_making_the_minute_archive_coarse_keeps_its_base_blocks(tmp_path, edit_at_hours):
    """1-minute base blocks (360 slots) written, then the files make 1 minute a coarse archive
    (720-slot blocks from 00:00): the coarse block rolled up from the new 10 s data merges into
    what is stored, never replaces it (the 00:00 block was written as a base block)."""
    before_dir, after_dir = tmp_path / "before", tmp_path / "after"
    before_dir.mkdir()
    after_dir.mkdir()
    base = TurokConfig(table_prefix=f"m{uuid.uuid4().hex[:8]}", cache_hosts="")
    before = with_schema_files(base, before_dir, "[all]\npattern = .*\nretentions = 1min:30d,1h:2y\n", AGGREGATION)
    after = with_schema_files(base, after_dir, SCHEMAS, AGGREGATION)
    store = MemoryBlockStore(before)
    now = [float(DAY)]
    writer = BlockWriter(store, before, load_schemas(before), clock=lambda: now[0], route_old=True,
                         owned_since=lambda metric: 0.0)
    edit = DAY + edit_at_hours * 3600
    minutes = {t: float(t % 977) for t in range(DAY, edit, 60)}
    for n, flush in enumerate(range(DAY, edit, 1800)):
        messages = [TurokMessage("a.cpu", t, [minutes[t]], 60, "average")
                    for t in range(flush, min(edit, flush + 1800), 60)]
        now[0] = flush + 1800 + 12
        writer.hold(received(encode_messages(messages), f"b{n}"))
        writer.close()
    now[0] = edit + 60  # the edit comes after the blocks of the minutes sent before it closed
    writer.close()
    writer.use_schemas(load_schemas(after))
    tens = {}
    for n, flush in enumerate(range(edit, DAY + 13 * 3600, 1800)):
        messages = []
        for t in range(flush, flush + 1800, 10):
            tens[t] = float(t % 101)
            messages.append(TurokMessage("a.cpu", t, [tens[t]], 10, "average"))
        now[0] = flush + 1800 + 12
        writer.hold(received(encode_messages(messages), f"a{n}"))
        writer.close()
    writer.close_all()
    row = store.fetch_series(["a.cpu"], 60, DAY, DAY + 12 * 3600)["a.cpu"]
    for t, value in minutes.items():
        assert row[(t - DAY) // 60] == value  # every base minute survives
    for t in range(edit, DAY + 12 * 3600, 60):
        assert row[(t - DAY) // 60] == pytest.approx(sum(tens[t + i] for i in range(0, 60, 10)) / 6)
