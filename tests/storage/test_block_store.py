"""BlockStore against the real moto server, plus client wrappers where moto cannot misbehave.

The tests of DynamoDB's limits (batch sizes, unprocessed items and keys) run on dynalite too,
which refuses an oversized batch as DynamoDB does. Neither server ever leaves BatchWriteItem
items unprocessed (dynalite answers every batch whole), so ``Unreliable`` does; dynalite does
leave BatchGetItem keys unprocessed past its response cap, as DynamoDB does past 16 MB."""
from __future__ import annotations

import calendar
import math
import random
import threading
import time

import msgpack
import pytest

from keeper.apply import list_tables  # paginated: the session's moto holds many tables
from turok_core.runtime.aws import make_client
from turok_core.storage import reads
from turok_core.storage.block_layout import block_span, decode_datapoints, encode_datapoints
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.reads import BATCH_GET_KEYS
from turok_core.storage.table_names import parse_table_name
from turok_core.storage.tables import BlockStore
from turok_core.storage.writes import BATCH_WRITE_ITEMS, BlockWriteError, item_size

DAY = calendar.timegm((2014, 4, 1, 0, 0, 0))  # 01-04-2014 00:00:00 UTC
STEP = 10


class Wrapper:
    """A boto3 client passing every call through, recording the batch calls it saw."""

    def __init__(self, client) -> None:
        self._client = client
        self.calls: dict[str, int] = {}
        self.write_sizes: list[int] = []
        self.get_sizes: list[int] = []

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return attribute(*args, **kwargs)
        return call

    def batch_write_item(self, RequestItems):
        self.calls["batch_write_item"] = self.calls.get("batch_write_item", 0) + 1
        self.write_sizes.append(sum(len(r) for r in RequestItems.values()))
        assert self.write_sizes[-1] <= BATCH_WRITE_ITEMS
        return self._write(RequestItems)

    def _write(self, request):
        return self._client.batch_write_item(RequestItems=request)

    def batch_get_item(self, RequestItems):
        self.calls["batch_get_item"] = self.calls.get("batch_get_item", 0) + 1
        self.get_sizes.append(sum(len(spec["Keys"]) for spec in RequestItems.values()))
        assert self.get_sizes[-1] <= BATCH_GET_KEYS
        return self._get(RequestItems)

    def _get(self, request):
        return self._client.batch_get_item(RequestItems=request)


class Unreliable(Wrapper):
    """Writes (or reads) only the first half of each batch for its first ``failures`` calls."""

    def __init__(self, client, write_failures: int = 0, get_failures: int = 0) -> None:
        super().__init__(client)
        self.write_failures = write_failures
        self.get_failures = get_failures

    def _write(self, request):
        if self.write_failures <= 0:
            return super()._write(request)
        self.write_failures -= 1
        entries = [(table, r) for table, requests in request.items() for r in requests]
        keep, left = entries[:len(entries) // 2], entries[len(entries) // 2:]
        if keep:
            done = {}
            for table, r in keep:
                done.setdefault(table, []).append(r)
            assert not self._client.batch_write_item(RequestItems=done).get("UnprocessedItems")
        unprocessed = {}
        for table, r in left:
            unprocessed.setdefault(table, []).append(r)
        return {"UnprocessedItems": unprocessed}

    def _get(self, request):
        if self.get_failures <= 0:
            return super()._get(request)
        self.get_failures -= 1
        keys = [(table, key) for table, spec in request.items() for key in spec["Keys"]]
        keep, left = keys[:len(keys) // 2], keys[len(keys) // 2:]
        response = {"Responses": {}, "UnprocessedKeys": {}}
        if keep:
            part = {}
            for table, key in keep:
                part.setdefault(table, {"Keys": [], "ConsistentRead": request[table].get("ConsistentRead", False)})
                part[table]["Keys"].append(key)
            response["Responses"] = self._client.batch_get_item(RequestItems=part)["Responses"]
        for table, key in left:
            response["UnprocessedKeys"].setdefault(table, {"Keys": []})["Keys"].append(key)
        return response


def make_store(config, client=None, **kwargs):
    return BlockStore(client or make_client("dynamodb", config), config, **kwargs)


def scan(config, table):
    client = make_client("dynamodb", config)
    items = [i for i in client.scan(TableName=table, ConsistentRead=True)["Items"] if i["metric"]["S"] != RECORD_METRIC]
    return sorted(items, key=lambda i: (i["metric"]["S"], int(i["start_time"]["N"])))


def test_range_across_midnight_uses_two_day_tables(turok_config):
    store = make_store(turok_config)
    midnight = DAY + 86400
    store.write_slots([("x.y", STEP, midnight - 10, 1.0), ("x.y", STEP, midnight, 2.0),
                       ("x.y", 60, midnight - 60, 7.0)])
    tables = list_tables(make_client("dynamodb", turok_config))
    prefix = turok_config.table_prefix
    mine = sorted(t for t in tables if parse_table_name(t, prefix, "_"))  # day tables, not the lease table
    assert mine == [f"{prefix}_01-04-2014_10sec", f"{prefix}_01-04-2014_1min", f"{prefix}_02-04-2014_10sec"]
    assert store.fetch_series(["x.y"], STEP, midnight - 20, midnight + 20) == {"x.y": [None, 1.0, 2.0, None]}
    assert store.fetch_series(["x.y"], 60, midnight - 120, midnight + 60) == {"x.y": [None, 7.0, None]}
    assert [int(i["start_time"]["N"]) for i in scan(turok_config, f"{prefix}_02-04-2014_10sec")] == [midnight]


def test_writes_are_chunked_by_25_items(dynamodb_config):
    turok_config = dynamodb_config.replace(conditional_writes=False)  # the BatchWriteItem path
    client = Wrapper(make_client("dynamodb", turok_config))
    store = make_store(turok_config, client)
    span = block_span(STEP, turok_config.block_slots)
    slots = [("chunk.m", STEP, DAY + i * span, float(i)) for i in range(60)]  # 60 blocks
    stats = store.write_slots(slots)
    assert client.write_sizes == [25, 25, 10]
    assert stats.write_calls == 3 and stats.items_written == 60 and stats.read_calls == 1
    got = store.fetch_series(["chunk.m"], STEP, DAY, DAY + 60 * span)["chunk.m"]
    assert [got[i * span // STEP] for i in range(60)] == [float(i) for i in range(60)]
    assert sum(v is not None for v in got) == 60


def test_unprocessed_items_are_retried_with_backoff(dynamodb_config):
    turok_config = dynamodb_config.replace(conditional_writes=False)  # the BatchWriteItem path
    sleeps = []
    client = Unreliable(make_client("dynamodb", turok_config), write_failures=3)
    store = make_store(turok_config, client, sleep=sleeps.append)
    make_store(turok_config).ensure_table(store.table_for(DAY, STEP))  # only backoff in ``sleeps``
    slots = [(f"retry.m{i}", STEP, DAY, float(i)) for i in range(20)]
    stats = store.write_slots(slots)
    assert stats.items_written == 20 and stats.write_calls == 4  # 20 → 10 → 5 → 3 left → done
    assert client.write_sizes == [20, 10, 5, 3]
    assert len(sleeps) == 3 and all(0 < s <= 5.0 for s in sleeps)
    assert sleeps[0] < sleeps[2] * 2  # growing, jittered
    got = store.fetch_series([f"retry.m{i}" for i in range(20)], STEP, DAY, DAY + STEP)
    assert got == {f"retry.m{i}": [float(i)] for i in range(20)}


def test_unprocessed_items_give_up_with_a_clear_error(dynamodb_config):
    config = dynamodb_config.replace(write_max_attempts=3, conditional_writes=False)
    client = Unreliable(make_client("dynamodb", config), write_failures=100)
    store = make_store(config, client, sleep=lambda s: None)
    make_store(config).ensure_table(store.table_for(DAY, STEP))  # a new table waits, this store does not
    with pytest.raises(BlockWriteError, match="unprocessed by BatchWriteItem after 3 attempts"):
        store.write_slots([("give.up", STEP, DAY, 1.0), ("give.up", STEP, DAY + 600, 2.0)])
    assert client.calls["batch_write_item"] == 3


def test_unprocessed_keys_are_retried_and_gets_hold_at_most_100_keys(dynamodb_config):
    turok_config = dynamodb_config.replace(block_slots=90)  # 15-minute blocks: 20 minutes span two
    store = make_store(turok_config)
    metrics = [f"read.m{i}" for i in range(150)]
    store.write_slots([(m, STEP, DAY + 20, float(i)) for i, m in enumerate(metrics)])
    client = Unreliable(make_client("dynamodb", turok_config), get_failures=2)
    reader = make_store(turok_config.replace(put_threads=1), client, sleep=lambda s: None)  # one call at a time
    got = reader.fetch_series(metrics, STEP, DAY, DAY + 1200)  # 2 blocks per metric: 300 keys
    expected = {m: [None, None, float(i)] + [None] * 117 for i, m in enumerate(metrics)}
    assert got == expected
    # 300 keys: 100 (50 left over) → 100 (50 left over) → 100 → 100; left-over keys asked again
    assert client.get_sizes == [100, 100, 100, 100]
    # several calls at once (put_threads): the same answer, still at most 100 keys per call
    client = Unreliable(make_client("dynamodb", turok_config), get_failures=2)
    reader = make_store(turok_config.replace(put_threads=3), client, sleep=lambda s: None)
    assert reader.fetch_series(metrics, STEP, DAY, DAY + 1200) == expected
    # the two failing calls each leave half their keys: 50 + 50, or 50 + 25 when the second
    # failure meets the first one's leftovers (threads decide which)
    assert max(client.get_sizes) == 100 and sum(client.get_sizes) - 300 in (75, 100), client.get_sizes


def test_parallel_gets_are_whole_100_key_calls(turok_config):
    """A wide read spread over threads asks as few BatchGetItem calls as its keys need: 250 keys
    are 3 calls (100, 100, 50), not one 125-key share per thread cut into 100 + 25."""
    config = turok_config.replace(block_slots=90)
    metrics = [f"calls.m{i}" for i in range(125)]
    make_store(config).write_slots([(m, STEP, DAY + 20, float(i)) for i, m in enumerate(metrics)])
    client = Wrapper(make_client("dynamodb", config))
    reader = make_store(config.replace(put_threads=8), client)
    got = reader.fetch_series(metrics, STEP, DAY, DAY + 1200)  # 2 blocks per metric: 250 keys
    assert got == {m: [None, None, float(i)] + [None] * 117 for i, m in enumerate(metrics)}
    assert sorted(client.get_sizes) == [50, 100, 100]
    # with a sink, each answer's items go to it as they arrive (from the pool's threads) and
    # nothing is held to return
    table = reader.table_for(DAY, STEP)
    keys = [(table, {"metric": {"S": m}, "start_time": {"N": str(DAY + b)}}) for m in metrics for b in (0, 900)]
    sunk: list = []
    assert reader._reader.batch_get(keys, consistent=False, sink=lambda t, items: sunk.extend(items)) == []
    assert sorted(item["metric"]["S"] for item in sunk) == sorted(metrics)  # the first blocks exist


def test_lean_batch_get_answers_as_botocore_parses(turok_config, monkeypatch):
    """The reader's BatchGetItem answers skip botocore's parser: every attribute type comes back
    exactly as botocore gives it (binary as bytes, also in sets, maps and lists)."""
    store = make_store(turok_config)
    table = store.table_for(DAY, STEP)
    store.ensure_table(table)
    item = {"metric": {"S": "lean.m"}, "start_time": {"N": str(DAY)},
            "datapoints": {"B": encode_datapoints([None, 2.5])},
            "bs": {"BS": [b"a", b"\x00b"]}, "ns": {"NS": ["1", "2.5"]}, "ss": {"SS": ["x"]},
            "m": {"M": {"b": {"B": b"\x01"}, "n": {"N": "-3"}, "l": {"L": [{"B": b"z"}, {"NULL": True}]}}},
            "flag": {"BOOL": False}}
    make_client("dynamodb", turok_config).put_item(TableName=table, Item=item)
    request = {table: {"Keys": [{"metric": {"S": "lean.m"}, "start_time": {"N": str(DAY)}},
                                {"metric": {"S": "lean.absent"}, "start_time": {"N": str(DAY)}}]}}
    plain = make_client("dynamodb", turok_config).batch_get_item(RequestItems=request)
    parsed = []
    monkeypatch.setattr(reads, "_plain_item", lambda item, parse=reads._plain_item: parsed.append(1) or parse(item))
    lean = store._reader._client.batch_get_item(RequestItems=request)
    assert parsed  # the lean parser answered, not botocore's
    assert lean["Responses"] == plain["Responses"] == {table: [item]}
    assert lean.get("UnprocessedKeys") == plain.get("UnprocessedKeys")
    assert store.fetch_series(["lean.m"], STEP, DAY, DAY + 3 * STEP) == {"lean.m": [None, 2.5, None]}


def test_keys_past_the_answer_cap_are_asked_again(dynamodb_config, dynamodb_server):
    """DynamoDB answers a BatchGetItem with at most 16 MB and leaves the other keys unprocessed;
    dynalite does the same past about 1.4 MB (moto answers whole): a wide read still comes back whole."""
    config = dynamodb_config.replace(block_slots=8640)  # a day of 10 s slots in one block
    rng = random.Random(13)
    metrics = [f"wide.m{i:02d}" for i in range(32)]
    # random doubles compress to nothing much: about 70 KB a block, over 2 MB for the 32
    values = {metric: [rng.random() for _ in range(8640)] for metric in metrics}
    make_store(config).write_blocks([(metric, STEP, DAY, dict(enumerate(values[metric]))) for metric in metrics])
    client = Wrapper(make_client("dynamodb", config))
    assert make_store(config, client).fetch_series(metrics, STEP, DAY, DAY + 86400) == values
    if dynamodb_server == "dynalite":
        assert len(client.get_sizes) > 1 and client.get_sizes[0] == 32 and sum(client.get_sizes) > 32
    else:
        assert client.get_sizes == [32]

def test_merge_sets_given_slots_and_keeps_the_others(turok_config):
    client = Wrapper(make_client("dynamodb", turok_config))
    store = make_store(turok_config, client)
    store.write_slots([("merge.m", STEP, DAY, 1.0), ("merge.m", STEP, DAY + 10, 2.0)])
    describes = client.calls["describe_table"]  # not found → CreateTable → ACTIVE
    stats = store.write_slots([("merge.m", STEP, DAY + 10, 5.0), ("merge.m", STEP, DAY + 30, 7.0)])
    assert stats.items_written == 1 and stats.tables_created == 0
    assert store.fetch_series(["merge.m"], STEP, DAY, DAY + 50) == {"merge.m": [1.0, 5.0, None, 7.0, None]}
    table = store.table_for(DAY, STEP)
    [item] = scan(turok_config, table)
    assert decode_datapoints(item["datapoints"]["B"]) == [1.0, 5.0, None, 7.0]  # trailing gaps dropped
    # the same slots again change nothing and are not even written
    before = scan(turok_config, table)
    again = store.write_slots([("merge.m", STEP, DAY + 10, 5.0), ("merge.m", STEP, DAY + 30, 7.0)])
    assert again.items_written == 0 and again.items_unchanged == 1 and again.write_calls == 0
    assert scan(turok_config, table) == before
    # the table is known: steady-state writes cost no DescribeTable
    assert client.calls["describe_table"] == describes == 2 and client.calls["create_table"] == 1


def test_write_units_follow_item_size(turok_config):
    config = turok_config.replace(block_slots=360)
    store = make_store(config)
    rng = random.Random(13)  # full-precision doubles: ~6.8 bytes each in block format v2 (codec 0x08)
    stats = store.write_slots([("big.m", STEP, DAY + i * STEP, rng.uniform(0, 1000)) for i in range(360)])
    [item] = scan(config, store.table_for(DAY, STEP))
    blob = bytes(item["datapoints"]["B"])
    size = item_size("big.m", DAY, blob)
    assert size > 2048 and stats.write_units == math.ceil(size / 1024) == 3


def test_design_json_datapoints_are_readable_and_mergeable(turok_config):
    store = make_store(turok_config)
    table = store.table_for(DAY, STEP)
    store.ensure_table(table)
    client = make_client("dynamodb", turok_config)
    client.put_item(TableName=table, Item={"metric": {"S": "json.m"}, "start_time": {"N": str(DAY)},
                                           "datapoints": {"S": "[1, 2, null, 4.5]"}})
    assert store.fetch_series(["json.m"], STEP, DAY, DAY + 60) == {"json.m": [1, 2, None, 4.5, None, None]}
    store.write_slots([("json.m", STEP, DAY + 20, 3.0)])
    assert store.fetch_series(["json.m"], STEP, DAY, DAY + 60) == {"json.m": [1, 2, 3.0, 4.5, None, None]}


def test_v1_msgpack_blocks_are_readable_and_merged_into_v2(turok_config):
    """Blocks written before format v2 (a msgpack list) read as before and are rewritten as v2."""
    store = make_store(turok_config)
    table = store.table_for(DAY, STEP)
    store.ensure_table(table)
    client = make_client("dynamodb", turok_config)
    v1 = msgpack.packb([1.0, None, 2.5], use_bin_type=True)
    client.put_item(TableName=table, Item={"metric": {"S": "v1.m"}, "start_time": {"N": str(DAY)},
                                           "datapoints": {"B": v1}})
    assert store.fetch_series(["v1.m"], STEP, DAY, DAY + 40) == {"v1.m": [1.0, None, 2.5, None]}
    assert store.fetch_slots(STEP, [("v1.m", DAY, DAY + 40)]) == {"v1.m": {DAY: 1.0, DAY + 20: 2.5}}
    store.write_slots([("v1.m", STEP, DAY + 10, -0.0)])
    [item] = [i for i in scan(turok_config, table) if i["metric"]["S"] == "v1.m"]
    assert bytes(item["datapoints"]["B"])[0] == 2
    got = store.fetch_series(["v1.m"], STEP, DAY, DAY + 40)["v1.m"]
    assert got == [1.0, -0.0, 2.5, None] and math.copysign(1.0, got[1]) == -1.0


def test_missing_tables_read_as_gaps(turok_config):
    client = Wrapper(make_client("dynamodb", turok_config))
    store = make_store(turok_config, client)
    assert store.fetch_series(["no.such"], STEP, DAY, DAY + 30) == {"no.such": [None, None, None]}
    assert "batch_get_item" not in client.calls  # no table, no read (it would fail the whole call)
    store.write_slots([("half.m", STEP, DAY + 86400 - 10, 9.0)])
    # the next day has no table: the existing one is still read
    got = store.fetch_series(["half.m"], STEP, DAY + 86400 - 20, DAY + 86400 + 20)
    assert got == {"half.m": [None, 9.0, None, None]}
    assert store.existing_tables([store.table_for(DAY, STEP), store.table_for(DAY + 86400, STEP)]) == {
        store.table_for(DAY, STEP)}


def test_existing_tables_cache_is_short_lived(turok_config):
    now = [1000.0]
    client = Wrapper(make_client("dynamodb", turok_config))
    store = make_store(turok_config, client, clock=lambda: now[0])
    name = store.table_for(DAY, STEP)
    assert store.existing_tables([name]) == set()
    assert store.existing_tables([name]) == set()
    assert client.calls["describe_table"] == 1
    make_store(turok_config).ensure_table(name)  # another process creates the table
    assert store.existing_tables([name]) == set()  # still believed missing …
    now[0] += 11
    assert store.existing_tables([name]) == {name}  # … but not for long
    assert client.calls["describe_table"] == 2


def test_a_deleted_table_is_recreated_by_the_next_write(dynamodb_config):
    # on dynalite, as on DynamoDB, the table is DELETING a while before it can be made again
    turok_config = dynamodb_config
    store = make_store(turok_config)
    store.write_slots([("gone.m", STEP, DAY, 1.0)])
    table = store.table_for(DAY, STEP)
    make_client("dynamodb", turok_config).delete_table(TableName=table)
    stats = store.write_slots([("gone.m", STEP, DAY + 10, 2.0)])
    assert stats.tables_created == 1
    assert store.fetch_series(["gone.m"], STEP, DAY, DAY + 20) == {"gone.m": [None, 2.0]}


def test_concurrent_merges_of_one_block_lose_nothing(turok_config):
    class SlowReads(Wrapper):
        def _get(self, request):  # a wide window between read and write
            response = super()._get(request)
            time.sleep(0.2)
            return response

    store = make_store(turok_config, SlowReads(make_client("dynamodb", turok_config)))
    store.ensure_table(store.table_for(DAY, STEP))
    threads = [threading.Thread(target=store.write_slots, args=([("race.m", STEP, DAY + i * STEP, float(i))],))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert store.fetch_series(["race.m"], STEP, DAY, DAY + 40) == {"race.m": [0.0, 1.0, 2.0, 3.0]}


def test_put_blocks_retries_unprocessed_items_and_never_reads(turok_config):
    sleeps = []
    client = Unreliable(make_client("dynamodb", turok_config), write_failures=2)
    store = make_store(turok_config, client, sleep=sleeps.append)
    span = block_span(STEP, turok_config.block_slots)
    blocks = [(f"fresh.m{i}", STEP, DAY + (i % 2) * span, {1: float(i)}) for i in range(30)]
    stats = store.put_blocks(blocks)
    # 25 → 13 → 7 left → done, then the last 5: at most 25 items a call, the rest retried
    assert client.write_sizes == [25, 13, 7, 5] and stats.write_calls == 4 and len(sleeps) == 2
    assert stats.items_written == 30 and stats.read_calls == 0
    assert client.calls.get("batch_get_item", 0) == 0 and client.calls.get("put_item", 0) == 0
    got = store.fetch_series([f"fresh.m{i}" for i in range(30)], STEP, DAY, DAY + 2 * span)
    assert all(got[f"fresh.m{i}"][(i % 2) * span // STEP + 1] == float(i) for i in range(30))


def test_a_table_made_by_someone_else_has_no_trusted_record(turok_config):
    # a table not created through the store (an older writer, a hand-made table) may hold blocks
    # no record names: its record is not trusted, so nothing is taken to be absent from it
    store = make_store(turok_config)
    table = store.table_for(DAY, STEP)
    make_client("dynamodb", turok_config).create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "metric", "KeyType": "HASH"},
                   {"AttributeName": "start_time", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "metric", "AttributeType": "S"},
                              {"AttributeName": "start_time", "AttributeType": "N"}])
    assert store.block_starts(table) is None
    store.write_slots([("foreign.m", STEP, DAY, 1.0)])
    assert store.block_starts(table) is None
    # a table the store makes is trusted from its creation
    other = store.table_for(DAY + 86400, STEP)
    store.write_slots([("own.m", STEP, DAY + 86400, 1.0)])
    assert store.block_starts(other) == frozenset({DAY + 86400})


def test_a_record_grown_too_long_is_no_longer_trusted(turok_config, monkeypatch):
    from turok_core.storage import block_starts
    monkeypatch.setattr(block_starts, "MAX_STARTS", 3)
    store = make_store(turok_config.replace(block_slots=1))
    table = store.table_for(DAY, STEP)
    store.write_slots([("long.m", STEP, DAY + i * STEP, 1.0) for i in range(3)])
    assert store.block_starts(table) == frozenset(DAY + i * STEP for i in range(3))
    store.write_slots([("long.m", STEP, DAY + 3 * STEP, 1.0)])
    assert store.block_starts(table) is None
    assert store.fetch_series(["long.m"], STEP, DAY, DAY + 4 * STEP) == {"long.m": [1.0] * 4}


def test_a_recreated_table_records_its_starts_again(dynamodb_config):
    store = make_store(dynamodb_config)
    store.write_slots([("again.m", STEP, DAY, 1.0)])
    table = store.table_for(DAY, STEP)
    make_client("dynamodb", dynamodb_config).delete_table(TableName=table)
    store.write_slots([("again.m", STEP, DAY, 2.0)])
    assert store.block_starts(table) == frozenset({DAY})
