"""Rollups: whisper's arithmetic (pure), and idempotence under replays and two turokd instances.

The DynamoDB tests run turokd's ``process_batch`` against the real moto server and compare full
table scans (every day table of every resolution) byte for byte; the last one runs two real
``twistd turokd`` processes on one queue.
"""
import calendar
import random
import threading

import pytest
import whisper

from keeper.apply import list_tables  # paginated: the session's moto holds many tables
from tests.conftest import free_port, running_twistd, wait_for, with_schema_files
from tests.support.turokd_batch import process_batch
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.runtime.aws import make_client
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.table_names import parse_table_name
from turok_core.storage.tables import BlockStore
from turok_core.turokd.rollup import WHISPER_METHODS, rollup_slots, rollup_value, whisper_xff
from turok_core.wire.codec import encode_messages
from turok_core.wire.queues import MessageQueue, ReceivedMessage

MIDNIGHT = calendar.timegm((2024, 3, 2, 0, 0, 0))
SCHEMAS = "[all]\npattern = .*\nretentions = 10s:1h,1min:1d,1h:7d\n"
AGGREGATION = """\
[sum]
pattern = [.]count$
aggregationMethod = sum
xFilesFactor = 0

[max]
pattern = [.]max$
aggregationMethod = max
xFilesFactor = 0.3

[last]
pattern = [.]last$
aggregationMethod = last
xFilesFactor = 0.5

[default]
pattern = .*
aggregationMethod = average
xFilesFactor = 0.5
"""
NAMES = [f"host{h}.{kind}" for h in range(2) for kind in ("cpu", "count", "max", "last")]


# ------------------------------------------------------------------------------- pure


def test_rollup_value_is_whispers_aggregate():
    rng = random.Random(3)
    for method, whisper_name in WHISPER_METHODS.items():
        for _ in range(200):
            values = [rng.choice([None, rng.uniform(-1e6, 1e6), rng.randint(-5, 5)]) for _ in range(6)]
            known = [v for v in values if v is not None]
            got = rollup_value(values, method, 0.0)
            assert got == (whisper.aggregate(whisper_name, known) if known else None)


def test_x_files_factor_edges_as_whisper_compares_them():
    assert rollup_value([1.0, 2.0, 3.0, None, None, None], "average", 0.5) == 2.0  # exactly at
    assert rollup_value([1.0, 2.0, None, None, None, None], "average", 0.5) is None  # just under
    assert rollup_value([None] * 6, "sum", 0.0) is None  # nothing known: left as it was
    assert rollup_value([None, 4.0], "sum", 0.0) == 4.0
    # whisper keeps xFilesFactor as a 32-bit float: 1/3 becomes 0.33333334, so 2 of 6 fall short
    assert whisper_xff(1 / 3) > 1 / 3
    assert rollup_value([1.0, 2.0, None, None, None, None], "maximum", 1 / 3) is None
    assert rollup_value([1.0, 2.0, 5.0, None, None, None], "maximum", 1 / 3) == 5.0
    assert rollup_value([1.0] * 6, "minimum", 1.0) == 1.0
    assert rollup_value([1.0] * 5 + [None], "minimum", 1.0) is None
    assert rollup_value([3.0, None, 1.0, None], "last", 0.5) == 1.0  # the last in time
    with pytest.raises(ValueError):
        rollup_value([1.0], "median", 0.0)


def test_rollup_slots_aligns_and_skips_what_fails():
    finer = {0: 1.0, 10: 2.0, 20: 3.0, 60: 7.0, 130: 4.0, 140: 4.0, 150: 4.0}
    got = rollup_slots(finer, 10, 60, {120, 0, 60}, "sum", 0.5)
    assert got == [(0, 6.0), (120, 12.0)]  # 60: 1 of 6 known < 0.5, left as it was
    assert rollup_slots(finer, 10, 60, {60}, "sum", 0.0) == [(60, 7.0)]
    with pytest.raises(ValueError):
        rollup_slots(finer, 10, 60, {30}, "sum", 0.5)
    with pytest.raises(ValueError):
        rollup_slots(finer, 7, 60, {0}, "sum", 0.5)


# ------------------------------------------------------------------------------- DynamoDB


@pytest.fixture
def schema_config(turok_config, tmp_path):
    return with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION)


def message_batches(seed: int, schemas) -> list[list[str]]:
    """An hour of 10 s slots across a midnight with gaps, in shuffled SQS bodies."""
    rng = random.Random(seed)
    messages = []
    for name in NAMES:
        kind = schemas.policy_for(name).aggregation_type
        for slot in range(MIDNIGHT - 1800, MIDNIGHT + 1800, 10):
            if rng.random() < 0.7:
                messages.append(TurokMessage(name, slot, [round(rng.uniform(0, 100), 2)], 10, kind))
    # in time order as gateways send windows, but out of order within ten minutes
    messages.sort(key=lambda m: m.start_time // 600 + rng.random())
    bodies = encode_messages(messages, max_body_bytes=1024)
    return [bodies[i:i + 4] for i in range(0, len(bodies), 4)]


def received(batch: list[str], tag: str) -> list[ReceivedMessage]:
    return [ReceivedMessage(body, f"{tag}.{i}", f"{tag}.m{i}", 1) for i, body in enumerate(batch)]


def snapshot(config) -> dict[str, list]:
    """Every item of every table under the config's prefix, keyed by the name after the prefix."""
    client = make_client("dynamodb", config)
    prefix = config.table_prefix + config.table_joiner
    tables = [t for t in list_tables(client) if parse_table_name(t, config.table_prefix, config.table_joiner)]
    result = {}
    for table in tables:
        items = client.scan(TableName=table, ConsistentRead=True)["Items"]
        result[table[len(prefix):]] = sorted((i["metric"]["S"], int(i["start_time"]["N"]), bytes(i["datapoints"]["B"]))
                                             for i in items if i["metric"]["S"] != RECORD_METRIC)
    return result


def expected_data(schema_config, batches) -> dict[str, list]:
    """One turokd, each batch once, in order, into tables of its own prefix."""
    config = schema_config.replace(table_prefix=schema_config.table_prefix + "one")
    store = BlockStore(make_client("dynamodb", config), config)
    schemas = load_schemas(config)
    for n, batch in enumerate(batches):
        process_batch(received(batch, f"one{n}"), store, schemas)
    return snapshot(config)


def test_every_message_twice_gives_identical_tables(schema_config):
    schemas = load_schemas(schema_config)
    store = BlockStore(make_client("dynamodb", schema_config), schema_config)
    batches = message_batches(1, schemas)
    for n, batch in enumerate(batches):
        process_batch(received(batch, f"a{n}"), store, schemas)
    first = snapshot(schema_config)
    assert sorted(first) == ["01-03-2024_10sec", "01-03-2024_1h", "01-03-2024_1min",
                             "02-03-2024_10sec", "02-03-2024_1h", "02-03-2024_1min"]
    assert first["01-03-2024_1h"] and first["02-03-2024_1min"]  # rollups on both days
    # every body delivered again, in another order and other batches
    bodies = [body for batch in batches for body in batch]
    random.Random(2).shuffle(bodies)
    unchanged = 0
    for n in range(0, len(bodies), 7):
        result = process_batch(received(bodies[n:n + 7], f"b{n}"), store, schemas)
        assert result.stats.items_written == 0  # nothing rewritten: no write unit spent
        unchanged += result.stats.items_unchanged
    assert unchanged > 0
    assert snapshot(schema_config) == first
    assert expected_data(schema_config, batches) == first  # order of delivery does not matter


def test_two_instances_in_threads_give_the_data_of_one(schema_config):
    schemas = load_schemas(schema_config)
    batches = message_batches(4, schemas)
    stores = [BlockStore(make_client("dynamodb", schema_config), schema_config) for _ in range(2)]
    errors = []

    def consume(index):
        try:
            for n in range(index, len(batches), 2):  # interleaved: neighbouring slots, same blocks
                process_batch(received(batches[n], f"t{index}.{n}"), stores[index], schemas)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert snapshot(schema_config) == expected_data(schema_config, batches)


def test_conditional_write_retries_a_block_changed_by_another_instance(schema_config):
    """Another process writes the block between our read and our put: both slots survive."""
    config = schema_config
    other = BlockStore(make_client("dynamodb", config), config)
    other.write_slots([("race.m", 10, MIDNIGHT, 1.0)])

    class Interleaving:
        def __init__(self, client):
            self._client, self.puts = client, 0

        def put_item(self, **kwargs):
            self.puts += 1
            if self.puts == 1:  # the other instance lands first
                other.write_slots([("race.m", 10, MIDNIGHT + 20, 3.0)])
            return self._client.put_item(**kwargs)

        def __getattr__(self, name):
            return getattr(self._client, name)

    client = Interleaving(make_client("dynamodb", config))
    store = BlockStore(client, config, sleep=lambda s: None)
    store.write_slots([("race.m", 10, MIDNIGHT + 10, 2.0)])
    assert client.puts == 2  # the first put was refused, the block merged again
    assert store.fetch_series(["race.m"], 10, MIDNIGHT, MIDNIGHT + 30) == {"race.m": [1.0, 2.0, 3.0]}


def test_rollup_recomputed_when_another_instance_wrote_after_our_read(schema_config):
    """B sets a slot and writes its minute between A's read and A's write: A's stale minute is fixed."""
    schemas = load_schemas(schema_config)
    other = BlockStore(make_client("dynamodb", schema_config), schema_config)
    b_body = encode_messages([TurokMessage("late.cpu", MIDNIGHT + 30, [9.0], 10, "average")])

    class Interleaved(BlockStore):
        reads = 0

        def fetch_slots(self, step, ranges, consistent=False):
            got = super().fetch_slots(step, ranges, consistent)
            Interleaved.reads += 1
            if Interleaved.reads == 1:  # A has read the 10 s slots; B lands its slot and rollups
                process_batch(received(b_body, "b"), other, schemas)
            return got

    store = Interleaved(make_client("dynamodb", schema_config), schema_config)
    a_body = encode_messages([TurokMessage("late.cpu", MIDNIGHT + t, [1.0], 10, "average") for t in (0, 10, 20)])
    process_batch(received(a_body, "a"), store, schemas)
    # 4 of 6 known: (1 + 1 + 1 + 9) / 4, not A's stale 3 of 6 (1.0) and not B's view alone
    assert store.fetch_series(["late.cpu"], 60, MIDNIGHT, MIDNIGHT + 60) == {"late.cpu": [3.0]}
    assert store.fetch_series(["late.cpu"], 3600, MIDNIGHT, MIDNIGHT + 3600) == {"late.cpu": [None]}


@pytest.mark.processes
def test_two_real_turokd_processes_on_one_queue(schema_config, tmp_path):
    schemas = load_schemas(schema_config)
    batches = message_batches(5, schemas)[:12]
    config = schema_config.replace(turokd_pollers=2, receive_wait_seconds=1, visibility_timeout_seconds=60,
                                   aws_threads=4)
    queue = MessageQueue(make_client("sqs", config), config.queue_name)
    for batch in batches:
        queue.send(batch)
    sqs = make_client("sqs", config)
    url = sqs.get_queue_url(QueueName=config.queue_name)["QueueUrl"]

    def drained():
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return (int(attributes["ApproximateNumberOfMessages"])
                + int(attributes["ApproximateNumberOfMessagesNotVisible"])) == 0

    ready = lambda log: "poller(s) on queue" in log.read_text()  # noqa: E731
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_twistd("turokd", config, tmp_path / "a", ready, "turokd a", timeout=15) as (log_a, _):
        with running_twistd("turokd", config.replace(cache_port=free_port()), tmp_path / "b", ready, "turokd b",
                            timeout=15) as (log_b, _):
            wait_for(drained, 25, "queue drained by two turokd processes")
    assert "Traceback" not in log_a.read_text() + log_b.read_text()
    assert snapshot(config) == expected_data(schema_config, batches)


def test_consolidate_merges_by_the_metrics_own_method_into_aligned_buckets():
    from turok_core.turokd.rollup import consolidate

    values = [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0, None]
    assert consolidate(100, 10, values, 8, "sum") == (100, 10, values)  # short enough: unchanged
    # 8 slots into at most 4 buckets of 20 s starting at multiples of 20: sums stay sums
    assert consolidate(100, 10, values, 4, "sum") == (100, 20, [3.0, 4.0, 11.0, 7.0])
    assert consolidate(100, 10, values, 4, "maximum") == (100, 20, [2.0, 4.0, 6.0, 7.0])
    # a start inside a bucket: buckets stay aligned, so repeated requests band alike
    start, step, merged = consolidate(110, 10, values, 4, "sum")
    assert start % step == 0 and start <= 110 and len(merged) <= 4 and sum(v for v in merged if v) == 25.0
    assert consolidate(0, 10, [None] * 6, 2, "average") == (0, 30, [None, None])
