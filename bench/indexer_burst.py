"""Issue 13: the indexer's first naming of a burst of new names, its S3 requests and its CPU.

    .venv/bin/python bench/indexer_burst.py [--names 1000,10000] [--batch 250] [--interval 0.1]
        [--coalesce SECONDS]

The real ``IndexerService`` runs in this process on Twisted's reactor against a moto server this
script starts (a fresh index queue and bucket per run, the default 64 shards, one poller): a
sender thread announces ``--names`` new names on the index queue as turokd does, ``--batch``
names a body, one body every ``--interval`` seconds (0: all at once). Once every name is
announced and the service stopped (which finishes its rounds), every name is checked to be in
the index and the queue to be empty. Printed per run: the indexer's S3 requests by operation,
its SQS requests, its CPU (this process's, less the sender thread's) and the wall time from the
first body sent to the last name written; ``--coalesce`` sets ``index_coalesce_seconds`` (unset:
the configured default).

Everything binds 127.0.0.1; moto runs in its own process (its CPU is not in the figures).
"""
from __future__ import annotations

import argparse
import collections
import resource
import sys
import threading
import time
from typing import Any

from common import index_bench_config, machine, start_moto, stop


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RequestCounter:
    """Counts a boto3 client's requests by operation (botocore's before-call event)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()

    def attach(self, client: Any, service: str) -> Any:
        client.meta.events.register(f"before-call.{service}", self._count)
        return client

    def _count(self, model: Any = None, **_: Any) -> None:
        with self.lock:
            self.calls[model.name] += 1


def run(count: int, args: argparse.Namespace, moto_port: int, number: int) -> dict[str, Any]:
    from twisted.internet import reactor, task

    from turok_core.index.s3_cache import IndexCache
    from turok_core.index.s3_store import IndexStore
    from turok_core.index.service import IndexerService
    from turok_core.index.tag_cache import make_tag_store
    from turok_core.runtime.aws import make_client
    from turok_core.runtime.provision import provision_bucket, provision_queues
    from turok_core.wire.announcements import encode_announcements
    from turok_core.wire.queues import MessageQueue

    extra = {"TUROK_INDEX_QUEUE_NAME": f"bench-index-{number}", "TUROK_RECEIVE_WAIT_SECONDS": "1",
             "TUROK_SELF_METRICS_INTERVAL_SECONDS": "0", "TUROK_QUEUE_NAME": f"bench-metrics-{number}",
             "TUROK_DEAD_LETTER_QUEUE_NAME": f"bench-dlq-{number}"}
    if args.coalesce is not None:
        extra["TUROK_INDEX_COALESCE_SECONDS"] = str(args.coalesce)
    config = index_bench_config(moto_port, f"bench-indexer-{number}", 64, **extra)
    provision_queues(make_client("sqs", config), config)
    provision_bucket(make_client("s3", config), config)
    names = [f"bench.burst{number}.host{i // 100}.metric{i % 100}" for i in range(count)]
    bodies = [body for start in range(0, count, args.batch)
              for body in encode_announcements(names[start:start + args.batch])]

    s3, sqs = RequestCounter(), RequestCounter()
    store = IndexStore(s3.attach(make_client("s3", config), "s3"), config)
    tag_store = make_tag_store(s3.attach(make_client("s3", config), "s3"), config)
    queue = MessageQueue.from_config(sqs.attach(make_client("sqs", config), "sqs"), config, config.index_queue_name)
    sender_queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
    service = IndexerService(config, store=store, queue=queue, tag_store=tag_store)
    sender_cpu = [0.0]
    first_sent = [0.0]

    def send() -> None:
        started = time.thread_time()
        first_sent[0] = time.monotonic()
        for body in bodies:
            sender_queue.send([body])
            if args.interval:
                time.sleep(args.interval)
        sender_cpu[0] = time.thread_time() - started

    result: dict[str, Any] = {}
    cpu0 = process_cpu()
    sender = threading.Thread(target=send, name="sender")

    def check() -> None:
        if service.counters.names_announced >= count and not sender.is_alive():
            watcher.stop()
            service.stopService().addBoth(finished)

    def finished(_: object) -> None:
        result["wall"] = time.monotonic() - first_sent[0]
        result["cpu"] = process_cpu() - cpu0 - sender_cpu[0]
        reactor.stop()

    watcher = task.LoopingCall(check)
    reactor.callWhenRunning(service.startService)
    reactor.callWhenRunning(sender.start)
    reactor.callWhenRunning(watcher.start, 0.05)
    reactor.run(installSignalHandlers=False)
    sender.join()
    cache = IndexCache(make_client("s3", config), config.replace(index_refresh_seconds=0))
    missing = set(names) - set(cache.names())
    left = len(sender_queue.receive(10, 0))
    result.update(names=count, bodies=len(bodies), s3=dict(s3.calls), sqs=dict(sqs.calls),
                  missing=len(missing), left=left, counters=service.counters)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", default="1000,10000", help="comma-separated burst sizes, one run each")
    parser.add_argument("--batch", type=int, default=250, help="names per announcement body")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between two bodies")
    parser.add_argument("--coalesce", type=float, default=None, help="index_coalesce_seconds")
    args = parser.parse_args(argv)
    print(f"indexer_burst: batch {args.batch}, interval {args.interval} s, coalesce {args.coalesce}; {machine()}",
          flush=True)
    sizes = [int(size) for size in args.names.split(",")]
    if len(sizes) != 1:  # Twisted's reactor runs once a process: one burst size per process
        import subprocess
        for size in sizes:
            command = [sys.executable, __file__, "--names", str(size), "--batch", str(args.batch),
                       "--interval", str(args.interval)]
            if args.coalesce is not None:
                command += ["--coalesce", str(args.coalesce)]
            subprocess.run(command, check=True)
        return 0
    moto, moto_port = start_moto()
    try:
        result = run(sizes[0], args, moto_port, 0)
    finally:
        stop(moto)
    s3_total = sum(result["s3"].values())
    print(f"  {result['names']:,} names in {result['bodies']} bodies: S3 {s3_total} requests {result['s3']}, "
          f"SQS {sum(result['sqs'].values())} {result['sqs']}; indexer CPU {result['cpu']:.3f} s, "
          f"wall {result['wall']:.2f} s; shard writes {result['counters'].shard_writes}; "
          f"missing {result['missing']}, left in queue {result['left']}", flush=True)
    return 1 if result["missing"] or result["left"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
