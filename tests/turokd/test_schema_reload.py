"""turokd notices an edit of the schema files while it runs (``model/schema_watch.py``): blocks
written after the edit roll up by the new files, the edit is recorded in the schema history as a
start records it, and a broken edit is logged while the previous files stay in force."""
from __future__ import annotations

import os

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from tests.turokd.test_turokd_partitions import DAY, FakeClock, immediate_pool  # noqa: F401 (fixture)
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.memory_leases import MemoryLeaseTable
from turok_core.storage.schema_history import MemorySchemaRecord
from turok_core.turokd.service import TurokdService
from turok_core.wire.codec import encode_messages
from turok_core.wire.memory_queue import MemoryQueue

pytestmark = pytest.mark.usefixtures("immediate_pool")
AGGREGATION = "[all]\npattern = .*\naggregationMethod = sum\nxFilesFactor = 0\n"


def write(path, text, bump):
    path.write_text(text)
    os.utime(path, ns=(bump * 10**9, bump * 10**9))  # a new mtime even within the clock's granularity


def test_an_edit_while_running_is_followed_recorded_and_a_broken_one_refused(tmp_path):
    schemas, aggregation = tmp_path / "schemas.conf", tmp_path / "aggregation.conf"
    write(schemas, "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n", 1)
    write(aggregation, AGGREGATION, 1)
    config = TurokConfig(table_prefix="reload", turokd_pollers=1, receive_wait_seconds=0, cache_port=0,
                         self_metrics_interval_seconds=0, schemas_file=str(schemas),
                         aggregation_file=str(aggregation), lease_heartbeat_seconds=5)
    reactor, lease_clock = MemoryReactorClock(), FakeClock(1000.0)
    queue, store, record = MemoryQueue("q", clock=lease_clock), MemoryBlockStore(config), MemorySchemaRecord()
    queue.send(encode_messages([TurokMessage("reload.before", DAY, [1.0], 10, "sum")]))
    service = TurokdService(config, reactor=reactor, store=store, queue=queue, index_queue=MemoryQueue(),
                            clock=lambda: DAY + 5, leases=MemoryLeaseTable(), lease_clock=lease_clock,
                            schema_record=record)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.startService()
        reactor.advance(1.0)
        first = service.schema_files.current
        assert [a.step for a in first.policy_for("x").archives] == [10, 60] and len(record.load()) == 1

        write(schemas, "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n[broken\n", 2)
        reactor.advance(61.0)  # a heartbeat past the reload interval: refused, logged, kept
        assert service.schema_files.current is first and len(record.load()) == 1
        assert any("edited but refused" in formatEvent(e) for e in events)

        write(schemas, "[all]\npattern = .*\nretentions = 10s:1d,5min:30d\n", 3)
        reactor.advance(61.0)
        assert [a.step for a in service.schema_files.current.policy_for("x").archives] == [10, 300]
        assert len(record.load()) == 2 and len(service.schema_files.history.versions) == 2  # recorded as a start would
        queue.send(encode_messages([TurokMessage("reload.after", DAY + 20, [2.0], 10, "sum")]))
        reactor.advance(1.0)
    finally:
        globalLogPublisher.removeObserver(events.append)
        done = service.stopService()  # writes every block, then rolls them up
        reactor.advance(10)
    assert done.called
    assert store.fetch_series(["reload.after"], 10, DAY + 20, DAY + 30)["reload.after"] == [2.0]
    # written after the edit: rolled up into the new 5 min archive, not the old 1 min one
    assert store.fetch_series(["reload.after"], 300, DAY, DAY + 300)["reload.after"] == [2.0]
    assert store.fetch_series(["reload.after"], 60, DAY, DAY + 60)["reload.after"] == [None]
