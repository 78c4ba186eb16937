"""What a day of metrics costs on AWS: DynamoDB write/read units, SQS and S3 requests per 1,000 points.

    .venv/bin/python bench/cost.py [--metrics 10000] [--hours 24] [--values mixed|float]
                                   [--writes conditional|batch] [--no-lease]

Issue 4's standard workload: ``--metrics`` names (100 hosts × N/100 metrics each) reporting every
10 s under ``10s:1d,1min:30d,1h:2y`` for ``--hours`` simulated hours, through Turok's own code on a
simulated clock (so a day runs in minutes): the gateway's ``WindowBuffer`` and SQS encoding, a
real SQS queue, turokd's ``BlockWriter`` (holding the partition's lease since before the day, as a
running turokd does: blocks put whole once when they close, coarse blocks computed from them;
``--no-lease``: every block merged and coarse blocks read back), the indexer's ``IndexStore`` on
S3, all on a moto server.
Every AWS call goes through a counting proxy that bills it as AWS does: DynamoDB write units by
item size (1 KB), read units by item size (4 KB, eventually consistent half), SQS requests per
64 KB chunk of payload, S3 PUT/LIST and GET/HEAD. Values: ``mixed`` is half integer counters, a
third two-decimal gauges and a fifth full-precision doubles; ``float`` all full precision (worst case).
"""
from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, machine, moto_command, moto_env, stop, wait_port  # noqa: E402
from turok_core.index.s3_store import IndexStore  # noqa: E402
from turok_core.model.config import TurokConfig  # noqa: E402
from turok_core.model.schemas import load_schemas  # noqa: E402
from turok_core.runtime.aws import make_client  # noqa: E402
from turok_core.runtime.provision import provision  # noqa: E402
from turok_core.storage.tables import BlockStore  # noqa: E402
from turok_core.storage.writes import item_size  # noqa: E402
from turok_core.turokd.announcer import Announcer  # noqa: E402
from turok_core.turokd.block_writer import BlockWriter  # noqa: E402
from turok_core.turokd.held_receipts import visibility_margin  # noqa: E402
from turok_core.windows.buffer import WindowBuffer  # noqa: E402
from turok_core.wire.codec import encode_messages  # noqa: E402
from turok_core.wire.queues import SQS_BATCH_ENTRIES, MessageQueue  # noqa: E402

STEP = 10
CHUNK = 65536
START = 1_795_478_400  # a UTC midnight (2026-11-24)
PRICES = {"wcu": 0.625e-6, "rcu": 0.125e-6, "sqs": 0.40e-6, "s3_put": 0.005e-3, "s3_get": 0.0004e-3}
SCHEMAS = "[standard]\npattern = .*\nretentions = 10s:1d,1min:30d,1h:2y\n"


class Billing(Counter):
    """Billed units by kind: wcu, rcu, sqs (64 KB chunks), s3_put, s3_get; plus raw call counts."""


def _chunks(size: int) -> int:
    return max(1, math.ceil(size / CHUNK))


def _item_units(item: dict, per: int) -> int:
    blob = item.get("datapoints", {}).get("B", b"")
    return max(1, math.ceil(item_size(item["metric"]["S"], int(item["start_time"]["N"]), bytes(blob)) / per))


class CountingClient:
    """A boto3 client proxy that bills every call it forwards."""

    def __init__(self, client, billing: Billing) -> None:
        self._client = client
        self._billing = billing

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if not callable(method):  # client.meta (reads.lean_batch_get registers its parser there)
            return method
        bill = getattr(self, "_bill_" + name, None)

        def call(*args, **kwargs):
            self._billing["calls." + name] += 1
            try:
                response = method(*args, **kwargs)
            except Exception as exc:
                if name == "put_item" and "ConditionalCheckFailed" in repr(exc):
                    self._billing["wcu"] += _item_units(kwargs["Item"], 1024)  # failed conditions are billed
                raise
            if bill is not None:
                bill(kwargs, response)
            return response
        return call

    # --- DynamoDB
    def _bill_put_item(self, request, _response):
        self._billing["wcu"] += _item_units(request["Item"], 1024)

    def _bill_batch_write_item(self, request, response):
        unprocessed = sum(len(v) for v in (response.get("UnprocessedItems") or {}).values())
        units = [_item_units(r["PutRequest"]["Item"], 1024) for rs in request["RequestItems"].values() for r in rs]
        self._billing["wcu"] += sum(units[:len(units) - unprocessed])

    def _bill_update_item(self, _request, _response):
        self._billing["wcu"] += 1  # the records of block starts: items of a few hundred bytes

    def _bill_get_item(self, request, _response):
        self._billing["rcu"] += 1 if request.get("ConsistentRead") else 0.5

    def _bill_batch_get_item(self, request, response):
        consistent = {table: spec.get("ConsistentRead", False) for table, spec in request["RequestItems"].items()}
        for table, items in response.get("Responses", {}).items():
            units = sum(_item_units(item, 4096) for item in items)
            self._billing["rcu"] += units if consistent[table] else units / 2

    # --- SQS: every 64 KB of payload is one request
    def _bill_send_message_batch(self, request, _response):
        self._billing["sqs"] += _chunks(sum(len(e["MessageBody"]) for e in request["Entries"]))

    def _bill_receive_message(self, _request, response):
        self._billing["sqs"] += _chunks(sum(len(m["Body"]) for m in response.get("Messages", [])))
        if not response.get("Messages"):
            self._billing["sqs_empty"] += 1  # a long poll that returned empty: billed all the same

    def _bill_delete_message_batch(self, _request, _response):
        self._billing["sqs"] += 1

    def _bill_change_message_visibility_batch(self, _request, _response):
        self._billing["sqs"] += 1

    # --- S3
    def _bill_put_object(self, _request, _response):
        self._billing["s3_put"] += 1

    def _bill_list_objects_v2(self, _request, _response):
        self._billing["s3_put"] += 1  # LIST is billed as a PUT-class request

    def _bill_get_object(self, _request, _response):
        self._billing["s3_get"] += 1

    def _bill_head_object(self, _request, _response):
        self._billing["s3_get"] += 1


def value_source(kind: str, count: int, seed: int = 1):
    """A function slot → list of ``count`` values, shaped like real collectors' output."""
    rng = random.Random(seed)
    counters = [rng.randint(0, 10 ** 9) for _ in range(count)]

    def values(_slot: int) -> list[float]:
        out = []
        for i in range(count):
            kind_i = "float" if kind == "float" else ("int" if i % 10 < 5 else "gauge" if i % 10 < 8 else "float")
            if kind_i == "int":
                counters[i] += rng.randint(0, 5000)
                out.append(float(counters[i]))
            elif kind_i == "gauge":
                out.append(round(rng.uniform(0, 100), 2))
            else:
                out.append(rng.uniform(0, 1000))
        return out
    return values


def run(metrics: int, hours: float, values_kind: str, endpoint: str, conditional: bool, owner: bool = True) -> dict:
    tag = uuid.uuid4().hex[:6]
    workdir = Path("/tmp") / f"turok-cost-{tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "schemas.conf").write_text(SCHEMAS)
    config = TurokConfig(aws_endpoint_url=endpoint, aws_region="us-east-1", queue_name=f"cost-{tag}",
                         index_queue_name=f"cost-index-{tag}", dead_letter_queue_name=f"cost-dlq-{tag}",
                         index_bucket=f"cost-{tag}", table_prefix=f"cost{tag}",
                         schemas_file=str(workdir / "schemas.conf"), conditional_writes=conditional)
    provision(config)
    billing = Billing()
    schemas = load_schemas(config)
    sim_now = [float(START)]
    store = BlockStore(CountingClient(make_client("dynamodb", config), billing), config)
    queue = MessageQueue(CountingClient(make_client("sqs", config), billing), config.queue_name,
                         config.sqs_max_message_bytes)
    index = IndexStore(CountingClient(make_client("s3", config), billing), config)
    # as a turokd holding its partition's lease since before the day began (and handed it by
    # nobody who died): new blocks put whole, coarse blocks from memory
    writer = BlockWriter(store, config, schemas, clock=lambda: sim_now[0],
                         owned_since=(lambda _metric: float(START) - 1) if owner else None)
    announcer = Announcer(clock=lambda: sim_now[0])

    def policy(name: str):
        archive_policy = schemas.policy_for(name)
        return archive_policy.archives[0].step, archive_policy.aggregation_type
    buffer = WindowBuffer(policy, config.window_grace_seconds)
    names = [f"servers.host{h:03d}.{['cpu', 'memory', 'disk', 'net', 'app'][m % 5]}.metric{m:03d}"
             for h in range(100) for m in range(max(1, metrics // 100))]
    source = value_source(values_kind, len(names))
    slots = int(hours * 3600) // STEP
    points = 0
    started = time.monotonic()
    for n in range(slots):
        slot = START + n * STEP
        batch_values = source(slot)
        buffer.add_points(names, batch_values, [slot] * len(names))
        points += len(names)
        sim_now[0] = slot + STEP + config.window_grace_seconds  # the gateway's flush releasing the slot
        bodies = encode_messages(buffer.release(sim_now[0]), config.sqs_max_message_bytes,
                                 config.sqs_compression_level)
        queue.send(bodies)
        waiting = len(bodies)
        for _ in range(100):  # turokd's long poll: a receive returns as soon as something arrived
            if waiting <= 0:
                break
            received = queue.receive(SQS_BATCH_ENTRIES, 1)
            waiting -= len(received)
            batch = writer.hold(received)
            margin = visibility_margin(config.visibility_timeout_seconds)
            longer = [(r, d - sim_now[0] + margin) for d, r in batch.held
                      if d - sim_now[0] + margin > config.visibility_timeout_seconds]
            if longer:
                queue.change_visibility(longer)
            fresh = announcer.new_names(sorted(batch.metrics))
            if fresh:
                index.add_names(fresh)  # what turok-indexer does with the announcements
                announcer.mark_announced(fresh)
        # turokd's other pollers wait on the queue too: an idle long poll returns empty (and is
        # billed) at most once per receive_wait_seconds
        idle = (config.turokd_pollers - 1) * STEP / config.receive_wait_seconds
        billing["sqs"] += idle
        billing["sqs_empty"] += idle
        closed = writer.close()
        if closed.deletable:
            queue.delete(closed.deletable)
        if n % 360 == 0:
            elapsed = time.monotonic() - started
            print(f"  simulated {n * STEP / 3600:5.1f} h of {hours} h, {points:,} points, {elapsed:6.0f} s, "
                  f"{billing['wcu']:,.0f} WCU so far", flush=True)
    # the day's end: every block closes (the hour blocks span the day)
    sim_now[0] = START + slots * STEP + 86400
    closed = writer.close()
    if closed.deletable:
        queue.delete(closed.deletable)
    return {"points": points, "billing": billing, "seconds": time.monotonic() - started,
            "metrics": len(names), "hours": hours, "conditional": conditional}


def report(result: dict, values_kind: str) -> None:
    points, billing = result["points"], result["billing"]
    per_k = {kind: billing[kind] * 1000 / points for kind in ("wcu", "rcu", "sqs", "s3_put", "s3_get")}
    dollars_per_m_points = sum(billing[k] * PRICES[k] for k in PRICES) / points * 1e6
    month_points = result["metrics"] * 8640 * 30
    print(f"\nCost of {points:,} points ({result['metrics']:,} metrics × {result['hours']} h at 10 s, "
          f"10s:1d,1min:30d,1h:2y, values {values_kind}, "
          f"{'conditional PutItem' if result['conditional'] else 'BatchWriteItem'} writes); "
          f"{result['seconds']:.0f} s wall; {machine()}")
    print(f"{'per 1,000 points':<34}{'Turok':>12}{'one write per point':>22}{'target':>10}")
    print(f"{'DynamoDB write units':<34}{per_k['wcu']:>12.2f}{1000 + 1000 / 6 + 1000 / 360:>22.0f}{15:>10}")
    print(f"{'DynamoDB read units':<34}{per_k['rcu']:>12.2f}{'':>22}{'':>10}")
    print(f"{'SQS requests (64 KB chunks)':<34}{per_k['sqs']:>12.3f}{3000:>22}{0.5:>10}")
    print(f"{'  of which empty receives':<34}{billing['sqs_empty'] * 1000 / points:>12.3f}"
          f"   (turokd's second poller: an "
          f"idle long poll returns empty at most once per receive_wait_seconds, 20 s)")
    print(f"{'S3 PUT/LIST requests':<34}{per_k['s3_put']:>12.4f}")
    print(f"{'S3 GET/HEAD requests':<34}{per_k['s3_get']:>12.4f}")
    print(f"{'$ per million points':<34}{dollars_per_m_points:>12.4f}{1000 * 0.625 + 3000 * 0.4:>22.0f}")
    print(f"$ per month for {result['metrics']:,} metrics at 10 s: {dollars_per_m_points * month_points / 1e6:,.2f}")
    print("calls: " + ", ".join(f"{k[6:]}={v:,}" for k, v in sorted(billing.items()) if k.startswith("calls.")))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=10000)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--values", choices=("mixed", "float"), default="mixed")
    parser.add_argument("--writes", choices=("conditional", "batch"), default="conditional",
                        help="turokd's conditional_writes (the default) or BatchWriteItem: the same write "
                             "units, plus a read before each first write; ~10x fewer calls for a local endpoint")
    parser.add_argument("--no-lease", action="store_true",
                        help="a writer without a partition lease (every block merged, coarse blocks read back), "
                             "as before partitions; by default turokd holds the lease, as a running turokd does")
    parser.add_argument("--endpoint", help="an AWS-compatible endpoint (default: a moto server started here)")
    args = parser.parse_args(argv)
    moto = None
    endpoint = args.endpoint
    if endpoint is None:
        port = free_port()
        moto = subprocess.Popen(moto_command(port), env=moto_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, 30, moto)
        endpoint = f"http://127.0.0.1:{port}"
    try:
        import os
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        report(run(args.metrics, args.hours, args.values, endpoint, args.writes == "conditional", not args.no_lease),
               args.values)
    finally:
        stop(moto)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
