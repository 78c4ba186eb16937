"""process_batch against the real moto server: aggregation, rejections, idempotent redelivery."""
from __future__ import annotations

import calendar
import json
import sys

import pytest

from keeper.apply import list_tables  # paginated: the session's moto holds many tables
from tests.support.turokd_batch import process_batch
from turok_core.model.message import TurokMessage
from turok_core.runtime.aws import make_client
from turok_core.storage.block_layout import block_span, decode_datapoints
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.table_names import parse_table_name
from turok_core.storage.tables import BlockStore, BlockWriteError
from turok_core.turokd.announcer import Announcer
from turok_core.wire.codec import encode_json, encode_messages
from turok_core.wire.queues import ReceivedMessage

DAY = calendar.timegm((2014, 4, 1, 0, 0, 0))
DESIGN_BODY = json.dumps({"metric": "a.b", "start_time": "01-04-2014 14:35:00",
                          "datapoints": "[1, 2, 30000, 3, 40]", "resolution": "20sec",
                          "aggregation_type": "average"})


def received(body: str, n: int = 1) -> ReceivedMessage:
    return ReceivedMessage(body, f"handle-{n}", f"id-{n}", 1)


def scan_all(config):
    client = make_client("dynamodb", config)
    tables = [t for t in list_tables(client) if parse_table_name(t, config.table_prefix, "_")]  # day tables
    return {t: sorted((i for i in client.scan(TableName=t, ConsistentRead=True)["Items"]
                       if i["metric"]["S"] != RECORD_METRIC),
                      key=lambda i: (i["metric"]["S"], i["start_time"]["N"])) for t in sorted(tables)}


@pytest.fixture
def store(turok_config):
    return BlockStore(make_client("dynamodb", turok_config), turok_config)


def test_design_json_message_is_stored_as_its_average(turok_config, store):
    result = process_batch([received(DESIGN_BODY)], store)
    assert result.deletable == ["handle-1"] and result.rejected == []
    assert result.metrics == {"a.b"} and result.messages == 1 and result.slots == 1
    table = f"{turok_config.table_prefix}_01-04-2014_20sec"
    tables = scan_all(turok_config)
    assert list(tables) == [table]
    [item] = tables[table]
    slot = calendar.timegm((2014, 4, 1, 14, 35, 0))
    span = block_span(20, turok_config.block_slots)
    assert int(item["start_time"]["N"]) == slot - slot % span
    values = decode_datapoints(item["datapoints"]["B"])
    assert values[(slot - int(item["start_time"]["N"])) // 20] == pytest.approx(6009.2)
    assert sum(v is not None for v in values) == 1
    assert store.fetch_series(["a.b"], 20, slot - 20, slot + 40) == {"a.b": [None, 6009.2, None]}


def test_same_body_delivered_twice_leaves_the_table_byte_identical(turok_config, store):
    messages = [TurokMessage(f"dup.m{i}", DAY + 30 * k, [i, k, 2.5], 10, agg)
                for i, agg in enumerate(("sum", "average", "maximum", "minimum", "last")) for k in range(4)]
    [body] = encode_messages(messages)
    first = process_batch([received(body, 1)], store)
    assert first.deletable == ["handle-1"] and first.stats.items_written == 5
    before = scan_all(turok_config)
    # redelivered alone, then again next to another message touching the same blocks
    second = process_batch([received(body, 2)], store)
    assert second.deletable == ["handle-2"] and second.stats.items_written == 0
    assert scan_all(turok_config) == before
    other = encode_messages([TurokMessage("dup.m0", DAY + 200, [9], 10, "sum")])[0]
    third = process_batch([received(other, 3), received(body, 4)], store)
    assert third.deletable == ["handle-3", "handle-4"]
    after = scan_all(turok_config)
    got = store.fetch_series(["dup.m0", "dup.m1", "dup.m4"], 10, DAY, DAY + 210)
    assert got["dup.m0"][::3][:4] == [2.5, 3.5, 4.5, 5.5] and got["dup.m0"][20] == 9
    assert got["dup.m1"][3] == pytest.approx((1 + 1 + 2.5) / 3) and got["dup.m4"][9] == 2.5
    fourth = process_batch([received(body, 5)], store)
    assert fourth.stats.items_written == 0 and scan_all(turok_config) == after


def test_undecodable_bodies_are_rejected_and_not_deleted(turok_config, store):
    good = encode_messages([TurokMessage("ok.m", DAY, [1.0], 10, "sum")])[0]
    bad_agg = json.dumps({"metric": "bad.agg", "start_time": "01-04-2014 00:00:00", "datapoints": [1],
                          "resolution": "10sec", "aggregation_type": "median"})
    week = json.dumps({"metric": "bad.res", "start_time": "01-01-1970 00:00:00", "datapoints": [1],
                       "resolution": "1w", "aggregation_type": "sum"})
    batch = [received("garbage ~~~", 1), received(good, 2), received(bad_agg, 3), received(week, 4),
             received(encode_json(TurokMessage("ok.json", DAY, [4, 6], 10, "average")), 5)]
    result = process_batch(batch, store)
    assert result.deletable == ["handle-2", "handle-5"]
    reasons = {r.message_id: r.reason for r in result.rejected}
    assert set(reasons) == {"id-1", "id-3", "id-4"}
    assert "neither JSON nor base64" in reasons["id-1"]
    assert "median" in reasons["id-3"] and "does not divide a day" in reasons["id-4"]
    assert result.metrics == {"ok.m", "ok.json"}
    assert store.fetch_series(["ok.m", "ok.json"], 10, DAY, DAY + 10) == {"ok.m": [1.0], "ok.json": [5.0]}


def test_messages_for_one_slot_in_a_batch_are_reduced_together_in_order(turok_config, store):
    first = encode_messages([TurokMessage("join.sum", DAY, [1, 2], 10, "sum"),
                             TurokMessage("join.last", DAY, [7, 8], 60, "last")])[0]
    second = encode_messages([TurokMessage("join.sum", DAY, [3], 10, "sum"),
                              TurokMessage("join.last", DAY, [5], 60, "last"),
                              TurokMessage("join.sum", DAY, [100], 60, "sum")])[0]
    result = process_batch([received(first, 1), received(second, 2), received(second, 3)], store)
    # the identical third body is one delivery of the second: its data counts once
    assert sorted(result.deletable) == ["handle-1", "handle-2", "handle-3"] and result.slots == 3
    assert store.fetch_series(["join.sum"], 10, DAY, DAY + 10) == {"join.sum": [6]}
    assert store.fetch_series(["join.sum", "join.last"], 60, DAY, DAY + 60) == {"join.sum": [100], "join.last": [5]}


def test_a_failed_write_acknowledges_nothing(turok_config):
    class FailingStore(MemoryBlockStore):
        def write_blocks(self, blocks, assume_new=True, exclusive=False, fill_gaps=False, merged=None):
            raise BlockWriteError("DynamoDB said no")

    good = encode_messages([TurokMessage("x.y", DAY, [1.0], 10, "sum")])[0]
    with pytest.raises(BlockWriteError):
        process_batch([received(good)], FailingStore(turok_config))
    # a batch of nothing but rejections never writes
    result = process_batch([received("%%%")], FailingStore(turok_config))
    assert result.deletable == [] and len(result.rejected) == 1


def test_announcer_hands_out_each_name_once_until_announced():
    announcer = Announcer(max_names=5)
    assert announcer.new_names(["a", "b", "a"]) == ["a", "b"]
    assert announcer.new_names(["a", "c"]) == ["c"]  # a is being announced by someone else
    announcer.announce_failed(["a", "b"])
    announcer.mark_announced(["c"])
    assert announcer.new_names(["c", "d"]) == ["a", "b", "d"]  # the failed ones come back
    announcer.mark_announced(["a", "b", "d"])
    assert announcer.new_names(["a", "c", "d"]) == [] and len(announcer) == 4
    assert announcer.new_names(["e"]) == ["e"]
    announcer.mark_announced(["e"])
    announcer.mark_announced(["f"])  # past max_names: memory starts over
    assert len(announcer) == 1 and announcer.new_names(["a", "f"]) == ["a"]


def test_announcer_keeps_no_room_for_names_once_announced():
    """The in-flight set is empty between sends: it does not keep the table of its largest batch."""
    announcer = Announcer()
    empty = sys.getsizeof(set())
    names = [f"m.{n}" for n in range(10000)]
    announcer.mark_announced(announcer.new_names(names))
    assert sys.getsizeof(announcer._in_flight) == empty
    announcer.new_names(["x.1", "x.2"])
    announcer.announce_failed(["x.1", "x.2"])
    assert sys.getsizeof(announcer._in_flight) == empty and announcer.new_names([]) == ["x.1", "x.2"]
