"""DynamoDB throttling, 5xx and partial batches in front of a real turokd (issue 5, item 4).

A real ``twistd turokd`` talks to the session's moto server through ``tests.support.faultproxy``, which
answers about 30% of DynamoDB requests with a fault of every kind. A stream of ``sum`` metrics goes
straight to SQS; every slot must end up stored exactly once, and no SQS body may leave the queue
before its data is stored. turokd holds its partition's lease, so it writes with BatchGetItem and
BatchWriteItem only (fresh puts and its sole writer's merges); the conditional PutItem merge that
writers without a lease use meets the same faults in ``test_conditional_merges_lose_nothing_under_faults``.
"""
from __future__ import annotations

import random
import time

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.conftest import running_twistd, with_schema_files
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.sum_stream import (
    AGGREGATION,
    SCHEMAS,
    DrainWatch,
    SumStream,
    audit_store,
    peak_rss_kib,
    queue_depth,
    turokd_ready,
)
from turok_core.runtime.aws import make_client
from turok_core.storage.tables import BACKOFF, BlockStore

FAULT_RATE = 0.3
# turokd writes each block once, in few large batches: at the uniform share (~8% of the batches
# that meet no error) a run could end without one partial batch, so partial batches are made
# likelier here (~19% of all batches) and the stream may go on longer until every kind was met
PARTIAL_BATCH = 0.25
MAX_EXTRA_SLOTS = 48


@pytest.fixture
def proxy(moto_endpoint):
    with FaultProxy(moto_endpoint, seed=20260425) as running:
        yield running


def raw_client(url):
    """A DynamoDB client that never retries, to see exactly what the proxy answers."""
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        config=BotoConfig(retries={"total_max_attempts": 1}))


def test_proxy_answers_each_fault_as_dynamodb_does(proxy, turok_config):
    client = raw_client(proxy.url)
    table = f"{turok_config.table_prefix}_proxy"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
    expected = {"provisioned": (400, "ProvisionedThroughputExceededException"),
                "throttling": (400, "ThrottlingException"),
                "error_500": (500, "InternalServerError"),
                "error_503": (503, "ServiceUnavailableException")}
    for rate, (status, code) in expected.items():
        proxy.faults = Faults(**{rate: 1.0})
        with pytest.raises(ClientError) as caught:
            client.put_item(TableName=table, Item={"k": {"S": rate}})
        assert (caught.value.response["ResponseMetadata"]["HTTPStatusCode"],
                caught.value.response["Error"]["Code"]) == (status, code)
    proxy.faults = Faults(error_500=1.0, lost_response=1.0)  # applied upstream, answered 500
    with pytest.raises(ClientError):
        client.put_item(TableName=table, Item={"k": {"S": "lost"}})

    proxy.faults = Faults(partial_batch=1.0, unprocessed_fraction=0.5)
    items = [{"PutRequest": {"Item": {"k": {"S": f"b{i}"}}}} for i in range(25)]
    left = client.batch_write_item(RequestItems={table: items})["UnprocessedItems"].get(table, [])
    keys = [{"k": {"S": f"b{i}"}} for i in range(25)]
    answer = client.batch_get_item(RequestItems={table: {"Keys": keys}})
    proxy.faults = Faults()
    stored = {item["k"]["S"] for item in client.scan(TableName=table, ConsistentRead=True)["Items"]}
    # what BatchWriteItem left unprocessed is exactly what did not reach moto
    assert 0 < len(left) < 25 and stored == {f"b{i}" for i in range(25)} - {
        w["PutRequest"]["Item"]["k"]["S"] for w in left} | {"lost"}
    got = {item["k"]["S"] for item in answer["Responses"].get(table, [])}
    unprocessed = {key["k"]["S"] for key in answer["UnprocessedKeys"][table]["Keys"]}
    asked = {key["k"]["S"] for key in keys}
    assert unprocessed and got <= stored and not got & unprocessed and asked & stored <= got | unprocessed
    assert proxy.injected("unprocessed-items") == 1 and proxy.injected("unprocessed-keys") == 1
    assert proxy.injected("500-lost") == 1
    # other services pass through untouched, whatever the faults
    proxy.faults = Faults(error_500=1.0)
    sqs = boto3.client("sqs", endpoint_url=proxy.url, region_name="us-east-1",
                       config=BotoConfig(retries={"total_max_attempts": 1}))
    assert sqs.get_queue_url(QueueName=turok_config.queue_name)["QueueUrl"]


def test_proxy_is_deterministic_for_a_seed(moto_endpoint, turok_config):
    decisions = []
    for _ in range(2):
        with FaultProxy(moto_endpoint, faults=Faults.uniform(0.5), seed=7) as proxy:
            client = raw_client(proxy.url)
            outcome = []
            for _ in range(30):
                try:
                    client.list_tables(Limit=1)
                    outcome.append("ok")
                except ClientError as exc:
                    outcome.append(exc.response["Error"]["Code"])
            decisions.append(outcome)
    assert decisions[0] == decisions[1] and len(set(decisions[0])) > 2


def test_backoff_is_capped_exponential_and_jittered(turok_config):
    sleeps = []
    store = BlockStore(make_client("dynamodb", turok_config), turok_config, sleep=sleeps.append)
    random.seed(1)
    draws = {attempt: [] for attempt in range(16)}
    for _ in range(50):
        for attempt in draws:
            store._backoff(attempt)
            draws[attempt].append(sleeps.pop())
    for attempt, values in draws.items():
        ceiling = min(BACKOFF.cap, BACKOFF.base * 2 ** attempt)
        assert all(ceiling / 2 <= value <= ceiling for value in values), attempt  # jitter in [½, 1]
        assert len(set(values)) > 40  # jittered: concurrent retries do not fall in step
    assert max(draws[15]) <= BACKOFF.cap and min(draws[15]) >= BACKOFF.cap / 2  # capped
    assert max(draws[0]) < min(draws[5])  # exponential


def missing_kinds(proxy) -> set[str]:
    """The kinds of fault not injected yet."""
    kinds = {"provisioned", "throttling", "500", "503", "unprocessed-keys", "unprocessed-items"}
    return {kind for kind in kinds if not proxy.injected(kind) + proxy.injected(f"{kind}-lost")}


def test_turokd_stores_every_point_once_under_dynamodb_faults(proxy, turok_config, tmp_path):
    metrics, slots = 30, 36  # few, large batch requests: enough data for every kind of fault to show
    config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION).replace(
        block_slots=6, window_grace_seconds=2, visibility_timeout_seconds=10,
        receive_wait_seconds=1, turokd_pollers=2, aws_threads=4, put_threads=4, self_metrics_interval_seconds=0)
    direct = audit_store(config)  # the audit reads moto directly
    now = int(time.time())
    stream = SumStream(config, metrics=metrics, first_slot=now - 900, seed=3, per_body=5)
    proxy.faults = Faults.uniform(FAULT_RATE, partial_batch=PARTIAL_BATCH)
    with running_twistd("turokd", config.replace(aws_endpoint_url=proxy.url), tmp_path, turokd_ready,
                        "turokd start") as (logfile, process):
        watch = DrainWatch(stream, direct, config)
        stream.send_steadily(slots=slots, interval=0.25, on_slot=lambda _: watch.check())
        # turokd writes each block once, so requests are few: the stream goes on (bounded) until
        # every kind of fault has been met at least once
        for _ in range(MAX_EXTRA_SLOTS):
            if not missing_kinds(proxy):
                break
            stream.send_slot()
            watch.check()
            time.sleep(0.25)
        started = time.monotonic()
        watch.wait(150)
        drained = time.monotonic() - started
        peak = peak_rss_kib(process.pid)
    audit = stream.audit(direct, rollups=True)
    print(f"\nfaults: sent {audit.sent}, stored {audit.stored}, "
          f"duplicated {audit.duplicated}, lost {audit.lost}, wrong {audit.wrong}, rollups wrong "
          f"{audit.rollups_wrong}, peak RSS {peak} KiB, drained {drained:.1f}s after the last send, "
          f"{watch.checks} checks; injected {dict(sorted(proxy.counts.items()))}; requests {proxy.requests}")
    assert audit.exact and audit.rollups_wrong == 0, audit.examples
    assert not watch.violations, f"SQS bodies deleted before their data was stored: {watch.violations[:5]}"
    assert queue_depth(config, config.dead_letter_queue_name) == 0  # no good message dead-lettered
    missing = missing_kinds(proxy)
    assert not missing, f"faults never injected: {missing} ({proxy.counts})"
    assert proxy.injected("500-lost") + proxy.injected("503-lost") > 0
    # the faulted requests came again (botocore's and the store's retries), after capped, jittered waits
    gaps = [gap for repeats in proxy.retry_gaps() for gap in repeats]
    assert len(gaps) > 10 and max(gaps) < 25.0, gaps
    assert len({round(gap, 3) for gap in gaps}) > len(gaps) // 2, gaps
    total = sum(proxy.requests.values())
    # ~24% of single-item requests and ~43% of batches (partial batches made likelier above)
    assert 0.15 < proxy.injected() / total < 0.55, (proxy.injected(), total)


def test_conditional_merges_lose_nothing_under_faults(proxy, turok_config):
    """Writers without a lease (the importer, tools, several writers at once) merge with a
    conditional PutItem per block: throttled, failed and lost answers are retried, and a retried
    put whose first try went through (its condition now fails) is merged again, never doubled."""
    config = turok_config.replace(conditional_writes=True)
    direct = audit_store(config)
    faulty = BlockStore(make_client("dynamodb", config.replace(aws_endpoint_url=proxy.url)), config)
    metrics = [f"cond.m{i:02d}" for i in range(40)]
    first = int(time.time()) // 3600 * 3600 - 86400
    proxy.faults = Faults.uniform(FAULT_RATE)
    expected: dict[str, list] = {metric: [None] * 12 for metric in metrics}
    for round_ in range(3):  # new blocks, then merges into them
        slots = [(metric, 10, first + 10 * (4 * round_ + k), float(i * 100 + 4 * round_ + k))
                 for i, metric in enumerate(metrics) for k in range(4)]
        faulty.write_slots(slots, assume_new=round_ == 0)
        for metric, _step, start, value in slots:
            expected[metric][(start - first) // 10] = value
    proxy.faults = Faults()
    assert direct.fetch_series(metrics, 10, first, first + 120) == expected
    assert proxy.injected() > 0 and proxy.requests.get("PutItem", 0) >= 3 * len(metrics)
    assert sum(proxy.injected(kind) + proxy.injected(f"{kind}-lost") for kind in ("500", "503")) > 0
