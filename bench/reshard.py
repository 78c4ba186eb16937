"""Benchmark: moving the tag index to more shards at a million tagged series, while it is written.

N tagged series (default 1,000,000, ``bench/tags.py``'s generator) are put in the tag index on a
moto server this script starts (64 shards, the default). Then:

- before: one new series added (the indexer's compare-and-swap of one shard): its time and the
  bytes it uploads and downloads, median of ``--writes``;
- the move to 4× the shards (``move_shards``): its duration, requests and bytes, while a writer
  thread keeps adding one new series a call (the writes during the move: their count and time);
  the anchor is the bytes of the whole index before the move;
- readers: a warm ``TagCache`` refreshed during the move (both layouts read, once the move has
  sealed a few shards; it runs beside the mover) and after the switch (its ``TagIndex`` updated
  in place), and a new ``TagCache``'s first load after the move;
- after: one new series added again, same measures; every name is checked to be there.

    .venv/bin/python bench/reshard.py [--series 1000000] [--to 256] [--writes 5]

Everything binds 127.0.0.1; moto's latency is part of every figure.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import index_bench_config, machine, median, start_moto, stop
from tags import VALUES, Clock, series


class Counting:
    """An S3 client counting requests and body bytes of the calls the index makes."""

    def __init__(self, client) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.requests = self.sent = self.received = 0

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.requests, self.sent, self.received

    def _count(self, sent: int = 0, received: int = 0) -> None:
        with self.lock:
            self.requests += 1
            self.sent += sent
            self.received += received

    def get_object(self, **kwargs):
        try:
            response = self.client.get_object(**kwargs)
        except Exception:
            self._count()
            raise
        body = response["Body"].read()
        self._count(received=len(body))
        return {**response, "Body": io.BytesIO(body)}

    def put_object(self, **kwargs):
        self._count(sent=len(kwargs["Body"]))
        return self.client.put_object(**kwargs)

    def __getattr__(self, name):  # listing and deleting: counted as requests
        attribute = getattr(self.client, name)
        if name in ("delete_objects", "list_objects_v2"):
            def counted(*args, **kwargs):
                self._count()
                return attribute(*args, **kwargs)
            return counted
        return attribute


def new_series(number: int) -> str:
    return f"bench.new{number}" + "".join(f";t{tag}=v{tag}" for tag in range(len(VALUES)))


def one_write(store, counting: Counting, number: int) -> tuple[float, int, int, int]:
    """(ms, requests, bytes sent, bytes received) of adding one new series."""
    before = counting.snapshot()
    started = time.perf_counter()
    stats = store.add_names([new_series(number)])
    millis = (time.perf_counter() - started) * 1000
    assert stats.added == 1
    after = counting.snapshot()
    return millis, after[0] - before[0], after[1] - before[1], after[2] - before[2]


def writes(store, counting: Counting, first: int, count: int) -> list[tuple[float, int, int, int]]:
    return [one_write(store, counting, number) for number in range(first, first + count)]


def summary(rows: list[tuple[float, int, int, int]]) -> str:
    return (f"{median([r[0] for r in rows]):,.0f} ms, {median([r[1] for r in rows]):.0f} requests, "
            f"{median([r[2] for r in rows]):,.0f} B up, {median([r[3] for r in rows]):,.0f} B down "
            f"(medians of {len(rows)})")


def index_bytes(s3, bucket: str, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under ``prefix``."""
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            count, size = count + 1, size + item["Size"]
    return count, size


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1_000_000)
    parser.add_argument("--to", type=int, default=256, help="the shard count to move to")
    parser.add_argument("--writes", type=int, default=5, help="single-series writes timed before and after")
    args = parser.parse_args(argv)
    from turok_core.index.reshard import move_shards
    from turok_core.index.tag_cache import TagCache, make_tag_store
    from turok_core.runtime.aws import make_client
    from turok_core.runtime.provision import provision_bucket

    print(f"reshard: {args.series:,} tagged series, tag index 64 -> {args.to} shards; {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-reshard-"))
    moto, moto_port = start_moto()
    try:
        config = index_bench_config(moto_port, "bench-reshard", 64, TUROK_AWS_MAX_POOL_CONNECTIONS="32")
        s3 = make_client("s3", config)
        provision_bucket(s3, config)
        names = series(args.series)
        started = time.monotonic()
        make_tag_store(s3, config).add_names(names)
        print(f"  indexed {len(names):,} series in {time.monotonic() - started:.0f} s", flush=True)
        counting = Counting(s3)
        store = make_tag_store(counting, config)
        objects, size = index_bytes(s3, config.index_bucket, f"{config.tag_index_prefix}shards-64/")
        print(f"  index: {objects} objects, {size:,} bytes", flush=True)
        before = writes(store, counting, 0, args.writes)
        print(f"  one new series, 64 shards: {summary(before)}", flush=True)

        clock = Clock()
        cache = TagCache(s3, config, clock=clock)
        cache.tag_index.find_series(["t8=v1234"])  # loaded and warm

        during: list[tuple[float, int, int, int]] = []
        moving = threading.Event()
        done = threading.Event()
        writer_counting = Counting(s3)  # apart: the mover's and the writer's requests interleave
        writer_store = make_tag_store(writer_counting, config)

        def writer() -> None:  # an indexer adding a series a call while the move runs
            number = 1000
            moving.wait(30)
            while not done.is_set() and number < 1000 + 10_000:
                during.append(one_write(writer_store, writer_counting, number))
                number += 1

        thread = threading.Thread(target=writer)
        thread.start()
        mover = make_tag_store(counting, config)
        moved: list = []
        mover_thread = threading.Thread(target=lambda: moved.append(move_shards(mover, to=args.to)))
        start_counts = counting.snapshot()
        started = time.perf_counter()
        moving.set()
        mover_thread.start()
        watcher = make_tag_store(s3, config)
        for _ in range(600):  # the warm reader's refresh once the move has sealed some shards
            manifest = watcher.manifest(fresh=True)
            if manifest.moving_to is None and moved:
                break
            if manifest.moving_to is not None and watcher.read_object(manifest.shards, 8).sealed_to:
                break
            time.sleep(0.05)
        clock.now += 7200
        refresh_started = time.perf_counter()
        cache.maybe_refresh()
        refresh_during = (time.perf_counter() - refresh_started) * 1000
        during_view = set(cache.tag_index.series())
        mover_thread.join(600)
        stats = moved[0]
        move_ms = (time.perf_counter() - started) * 1000
        done.set()
        thread.join(120)
        end_counts = counting.snapshot()
        known = set(names) | {new_series(n) for n in range(args.writes)}
        assert known <= during_view <= known | {new_series(1000 + i) for i in range(len(during))}
        print(f"  warm TagCache refresh during the move (both layouts): {refresh_during:,.0f} ms "
              f"(a concurrent reader: the move's time includes it)", flush=True)
        requests, sent, received = (end - start for end, start in zip(end_counts, start_counts))
        print(f"  move: {move_ms:,.0f} ms, {stats}", flush=True)
        print(f"  move: {requests:,} requests, {sent:,} B up, {received:,} B down "
              f"({sent / size:.2f}x / {received / size:.2f}x the index's {size:,} B)", flush=True)
        print(f"  during the move, one new series a call: {len(during)} writes, {summary(during) if during else '-'}",
              flush=True)

        clock.now += 7200
        started = time.perf_counter()
        cache.maybe_refresh()
        refresh_after = (time.perf_counter() - started) * 1000
        print(f"  warm TagCache refresh after the switch (the new layout only): {refresh_after:,.0f} ms "
              f"(updates {cache.updates}, rebuilds {cache.rebuilds})", flush=True)
        started = time.perf_counter()
        fresh = TagCache(s3, config)
        fresh.maybe_refresh()
        first_load = (time.perf_counter() - started) * 1000
        print(f"  new TagCache's first load, {args.to} shards: {first_load:,.0f} ms", flush=True)
        expected = set(names) | {new_series(n) for n in range(args.writes)} | {
            new_series(1000 + i) for i in range(len(during))}
        assert len(cache.tag_index) == len(expected) == len(fresh.tag_index), (len(cache.tag_index), len(expected))
        assert set(fresh.tag_index.series()) == expected

        after = writes(store, counting, 500, args.writes)
        print(f"  one new series, {args.to} shards: {summary(after)}", flush=True)
        new_objects, new_size = index_bytes(s3, config.index_bucket, f"{config.tag_index_prefix}shards-")
        print(f"  index after: {new_objects} objects, {new_size:,} bytes", flush=True)
    finally:
        stop(moto)
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| measure | 64 shards (before) | after the move |")
    print("|---|---|---|")
    for label, at in (("ms", 0), ("requests", 1), ("bytes up", 2), ("bytes down", 3)):
        b, a = median([r[at] for r in before]), median([r[at] for r in after])
        print(f"| one new series: {label} | {b:,.0f} | {a:,.0f} ({a / b:.2f}x) |")
    print(f"\nmove 64 -> {args.to}: {move_ms:,.0f} ms, {requests:,} requests, {sent:,} B up ({sent / size:.2f}x the "
          f"index), {received:,} B down ({received / size:.2f}x); {len(during)} writes during it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
