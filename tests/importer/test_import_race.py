"""An import racing turokd on the same block, on moto, interleaved deterministically.

turokd (a ``BlockWriter`` holding its partition's lease through ``PartitionLeases``) merges a block
and the import (``FileImporter``, what each worker runs) writes the same block in the middle of
that merge: after turokd read it, before turokd's put. Without the import's mark in the lease
table (``importer/guard.py``) turokd's unconditional put drops the imported slots; with it, turokd
merges with conditions, and every imported slot and turokd's live slot are stored. Both of
turokd's unconditional ways are covered: the batched merge of a block it did not put (late data
into a block older than its lease) and the whole put of a block it owns since it began.
"""
from __future__ import annotations

import pytest

from tests.conftest import with_schema_files
from tests.support.whisper_trees import NOW, carbon_path, make_file
from tests.turokd.test_rollups import received
from turok_core.importer.guard import ImportGuard
from turok_core.importer.journal import file_key
from turok_core.importer.layout import TreeFile
from turok_core.importer.run import FileImporter
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.runtime.aws import make_client
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.memory_leases import MemoryLeaseTable
from turok_core.storage.tables import BlockStore
from turok_core.turokd.block_writer import BlockWriter
from turok_core.turokd.lease_holder import PartitionLeases
from turok_core.turokd.start_snapshots import StartSnapshots
from turok_core.wire.codec import encode_messages

SCHEMAS = "[all]\npattern = .*\nretentions = 1min:1d,1h:7d\n"
AGGREGATION = "[all]\npattern = .*\naggregationMethod = average\nxFilesFactor = 0\n"
METRIC = "race.web1.cpu"
LIVE = -7.25  # turokd's value: live data wins over the imported one in its slot


class WriteHook:
    """turokd's DynamoDB client: runs ``before_write`` once, just before turokd's first write
    (its BatchWriteItem or conditional PutItem), i.e. after turokd read the block."""

    def __init__(self, client, before_write) -> None:
        self._client = client
        self._before_write = before_write
        self.calls: list[str] = []

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if name not in ("batch_write_item", "put_item"):
            return attribute

        def call(**kwargs):
            self.calls.append(name)
            if self._before_write is not None:
                hook, self._before_write = self._before_write, None
                hook()
            return attribute(**kwargs)
        return call


def block_values(store, config, start):
    span = store.span(60)
    return store.fetch_series([METRIC], 60, start, start + span)[METRIC]


@pytest.mark.parametrize("way", ["late block, batched merge", "owned block, put whole"])
@pytest.mark.parametrize("marked", [False, True])
def test_an_import_inside_a_turokd_merge_loses_no_slot_once_marked(turok_config, tmp_path, way, marked):
    config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION)
    schemas = load_schemas(config)
    path = carbon_path(tmp_path / "whisper", METRIC)
    make_file(path, [(60, 1440), (3600, 168)], "average", 0.0, seed=3, days=2, density=1.0)
    tree_file, key = TreeFile(str(path), "race/web1/cpu.wsp"), file_key(str(path))

    # what the import alone stores in the block
    alone = MemoryBlockStore(config)
    FileImporter(config, schemas, alone, NOW)(tree_file, key)
    span = alone.span(60)
    slot = NOW - NOW % 60 - 1800
    start = slot - slot % span
    if way.startswith("late"):
        slot, start = slot - span, start - span  # a block begun before turokd took the lease
        lease_taken = float(NOW)
    else:
        lease_taken = float(start)  # turokd alone since the block began: it would put it whole
    expected = block_values(alone, config, start)
    assert sum(v is not None for v in expected) >= 30
    expected[(slot - start) // 60] = LIVE

    now = [lease_taken]
    table = MemoryLeaseTable()
    leases = PartitionLeases(table, 1, config.lease_duration_seconds, config.lease_write_margin_seconds,
                             worker="turokd-a", clock=lambda: now[0])
    assert leases.heartbeat().gained == [0] and leases.owned_since(METRIC) == lease_taken

    importer = FileImporter(config, schemas, BlockStore(make_client("dynamodb", config), config), NOW)
    hook = WriteHook(make_client("dynamodb", config), lambda: importer(tree_file, key))
    turokd_store = BlockStore(hook, config)
    writer = BlockWriter(turokd_store, config, schemas, clock=lambda: now[0],
                         owned_since=leases.owned_since, route_old=True, shared_before=leases.shared_before,
                         unwritten=StartSnapshots(turokd_store, leases.records_since).unwritten)
    now[0] = max(now[0], float(NOW))
    leases.heartbeat()  # renewed: turokd is alive when the import starts

    def turokd_heartbeat(seconds: float) -> None:  # the guard's waits: turokd's heartbeats go on
        now[0] += max(seconds, config.lease_heartbeat_seconds)
        leases.heartbeat()

    guard = ImportGuard.for_config(table, config, NOW + 1)
    guard.clock, guard._sleep = (lambda: now[0]), turokd_heartbeat
    if marked:
        guard.__enter__()
        assert leases.shared_before() == NOW + 1 and leases.owned_since(METRIC) == NOW + 1
    writer.hold(received(encode_messages([TurokMessage(METRIC, slot, [LIVE], 60, "average")]), "live"))
    writer.close_all()  # turokd's write of the block; the import's lands inside it
    if marked:
        guard.__exit__(None, None, None)
        leases.heartbeat()
        assert leases.shared_before() is None and leases.owned_since(METRIC) == NOW + 1

    stored = block_values(BlockStore(make_client("dynamodb", config), config), config, start)
    if marked:
        assert "put_item" in hook.calls  # merged with a condition, which the import's write failed
        assert stored == expected  # every imported slot, and turokd's live one
    else:
        # the race is real: turokd's unconditional put dropped what the import wrote meanwhile
        assert hook.calls[0] == "batch_write_item"
        assert stored[(slot - start) // 60] == LIVE
        assert sum(v is not None for v in stored) < sum(v is not None for v in expected)
