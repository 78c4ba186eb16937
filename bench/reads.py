"""Benchmark 6 of issue 6: reads. graphite-web render latency with Turok's finder against the
same data in whisper files, and ``find`` latency over large indexes.

Render: M series (``bench.h<NNN>.m<K>``, retentions ``1m:1d,5m:7d``, average) are written once
with ``turok_core.storage.tables.BlockStore.put_blocks`` (as turokd writes a block it alone
writes: block format v2, the block length ``block_span`` gives at the default ``block_slots``)
into DynamoDB tables on a moto server this script starts (their names into the S3 index with
``IndexStore``), and into whisper files with the same archives and values. Then, in one child
process per storage, a real graphite-web (Django ``Client``, ``/render/?format=json``) with
``finder.TurokFinder`` or graphite-web's ``StandardFinder`` answers ``target`` patterns matching
1, 100 and 1,000 series over the last 1 h, 1 day and 7 days: median and p95 latency, and for Turok
the DynamoDB requests and read units per render (units counted from the items BatchGetItem
returned: each item rounded up to 4 KB, half a unit for eventually consistent reads, as DynamoDB
bills; the counting's own CPU is left out of graphite-web's).

Find: 100,000 and 1,000,000 names in the S3 index; ``IndexCache.match`` (what the finder's
``find_nodes`` calls) cold (a new cache: the shards downloaded from S3 and the tree built) and
warm (the tree in memory).

    .venv/bin/python bench/reads.py [--series 1000] [--renders 7] [--find-names 100000,1000000]

Everything binds 127.0.0.1. moto is not DynamoDB: its latencies (and the Python HTTP server in
front of it) are part of Turok's figures here; compare the shape, not the absolute milliseconds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, cpu_seconds, free_port, machine, median, moto_command, moto_env, stop, wait_port

RETENTIONS = ((60, 1440), (300, 2016))  # 1m:1d, 5m:7d
SCHEMAS = "[bench]\npattern = ^bench\\.\nretentions = 1m:1d,5m:7d\n\n[default]\npattern = .*\nretentions = 1m:1d\n"
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0.5\naggregationMethod = average\n"
RANGES = (("1 h", "-1h"), ("1 day", "-1d"), ("7 days", "-7d"))
PREFIX_TABLES = "benchreads"


def series_names(count: int) -> list[str]:
    """``bench.h<host>.m<k>``: 10 metrics per host."""
    return [f"bench.h{i // 10:03d}.m{i % 10}" for i in range(count)]


def patterns(count: int) -> list[tuple[int, str]]:
    """Target patterns matching 1, 100 and ``count`` series (in that order, those ≤ count)."""
    found = [(1, "bench.h000.m0")]
    if count >= 100:
        found.append((100, "bench.h0[0-9][0-9].m*" if count == 100 else "bench.h00*.m*"))
    if count >= 1000:
        found.append((1000, "bench.h*.m*" if count == 1000 else "bench.h[0-9]*.m*"))
    return found


def value(index: int, minute: int) -> float:
    return float((index * 7 + minute) % 100)


def points(index: int, now: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(1-minute points of the last day, 5-minute averages of the 7 days), aligned as whisper aligns."""
    fine_step, fine_count = RETENTIONS[0]
    coarse_step, coarse_count = RETENTIONS[1]
    last_fine = now - now % fine_step
    first_fine = last_fine - (fine_count - 1) * fine_step
    fine = [(t, value(index, t // 60)) for t in range(first_fine, last_fine + 1, fine_step)]
    last_coarse = now - now % coarse_step
    coarse = [(t, sum(value(index, t // 60 + k) for k in range(5)) / 5)
              for t in range(last_coarse - (coarse_count - 1) * coarse_step, last_coarse + 1, coarse_step)]
    return fine, coarse


def config_env(moto_port: int, workdir: Path, index_prefix: str) -> dict[str, str]:
    (workdir / "schemas.conf").write_text(SCHEMAS)
    (workdir / "aggregation.conf").write_text(AGGREGATION)
    return {
        "TUROK_AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}", "TUROK_AWS_REGION": "us-east-1",
        "TUROK_INDEX_BUCKET": "bench-reads", "TUROK_INDEX_PREFIX": index_prefix,
        "TUROK_TABLE_PREFIX": PREFIX_TABLES, "TUROK_SCHEMAS_FILE": str(workdir / "schemas.conf"),
        "TUROK_AGGREGATION_FILE": str(workdir / "aggregation.conf"),
        "TUROK_INDEX_REFRESH_SECONDS": "3600",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    }


def load(env: dict[str, str], workdir: Path, count: int, now: int) -> None:
    """Write ``count`` series into DynamoDB (+ the S3 index) and into whisper files."""
    import whisper

    from turok_core.index.s3_store import IndexStore
    from turok_core.model.config import load_config
    from turok_core.runtime.aws import make_client
    from turok_core.runtime.provision import provision_bucket
    from turok_core.storage.block_layout import slots_by_block
    from turok_core.storage.tables import BlockStore

    config = load_config(environ=env)
    s3 = make_client("s3", config)
    provision_bucket(s3, config)
    names = series_names(count)
    IndexStore(s3, config).add_names(names)
    store = BlockStore(make_client("dynamodb", config), config)
    whisper_dir = workdir / "whisper"
    started = time.monotonic()
    for start in range(0, count, 50):
        slots = []
        for index in range(start, min(count, start + 50)):
            fine, coarse = points(index, now)
            slots.extend((names[index], 60, t, v) for t, v in fine)
            slots.extend((names[index], 300, t, v) for t, v in coarse)
            path = whisper_dir.joinpath(*names[index].split(".")).with_suffix(".wsp")
            path.parent.mkdir(parents=True, exist_ok=True)
            whisper.create(str(path), list(RETENTIONS), xFilesFactor=0.5, aggregationMethod="average")
            # the 5-minute archive directly for what the 1-minute one does not hold; whisper
            # itself rolls the last day's minutes up into it, as turokd does
            oldest_fine = fine[0][0]
            whisper.update_many(str(path), [p for p in coarse if p[0] < oldest_fine], now=now)
            whisper.update_many(str(path), fine, now=now)
        # fresh blocks, put whole without a read: what turokd does with blocks only it writes
        store.put_blocks(slots_by_block(slots, store.span))
    print(f"  loaded {count:,} series ({count * sum(n for _, n in RETENTIONS):,} slots each side; blocks of "
          f"{', '.join(f'{store.span(step) // step} slots at {step} s' for step, _ in RETENTIONS)}) "
          f"in {time.monotonic() - started:.0f} s", flush=True)


WHISPER_SETTINGS = '''import os
STORAGE_DIR = {storage!r}
LOG_DIR = os.path.join(STORAGE_DIR, "log")
os.makedirs(LOG_DIR, exist_ok=True)
SECRET_KEY = "bench-only"
STORAGE_FINDERS = ("graphite.finders.standard.StandardFinder",)
STANDARD_DIRS = [{whisper!r}]
CARBONLINK_HOSTS = []
TIME_ZONE = "UTC"
LOG_RENDERING_PERFORMANCE = False
LOG_CACHE_PERFORMANCE = False
'''


def measure_child(storage: str, count: int, renders: int) -> None:
    """In a child process: graphite-web answering renders; prints one JSON line per case."""
    import django
    django.setup()
    from django.test import Client
    from graphite.storage import STORE

    calls = {"requests": 0, "units": 0.0, "cpu": 0.0}  # cpu: the counting's own, left out of the figures
    if storage == "turok":
        from turok_core.storage.writes import item_size
        finder = next(f for f in STORE.finders if type(f).__name__ == "TurokFinder")

        def count_call(http_response, parsed, model, **_):
            counting_from = time.thread_time()
            calls["requests"] += 1
            for items in (parsed.get("Responses") or {}).values():
                for item in items:
                    blob = item.get("datapoints", {})
                    blob = blob.get("B", blob.get("S", b""))
                    size = item_size(item["metric"]["S"], int(item["start_time"]["N"]), blob)
                    calls["units"] += math.ceil(size / 4096) * 0.5  # eventually consistent
            calls["cpu"] += time.thread_time() - counting_from

        finder.blocks._client.meta.events.register("after-call.dynamodb", count_call)
    client = Client()
    moto_pid = int(os.environ.get("BENCH_MOTO_PID", "0"))
    for expected, pattern in patterns(count):
        for label, since in RANGES:
            times, requests, units, answered, own_cpu, moto_cpu = [], [], [], 0, [], []
            for attempt in range(renders + 1):
                calls["requests"], calls["units"], calls["cpu"] = 0, 0.0, 0.0
                cpu_before = time.process_time()  # graphite-web and the finder: all threads
                moto_before = cpu_seconds(moto_pid) if moto_pid else 0.0
                started = time.perf_counter()
                response = client.get("/render/", {"target": pattern, "from": since, "format": "json"})
                elapsed = time.perf_counter() - started
                own_cpu.append(time.process_time() - cpu_before - calls["cpu"])
                moto_cpu.append(cpu_seconds(moto_pid) - moto_before if moto_pid else 0.0)
                if response.status_code != 200:
                    raise RuntimeError(f"{storage} render {pattern} {since}: HTTP {response.status_code}")
                series = json.loads(response.content)
                answered = len(series)
                if attempt == 0:
                    own_cpu.pop(), moto_cpu.pop()
                    continue  # the first render warms graphite's and the finder's caches
                times.append(elapsed)
                requests.append(calls["requests"])
                units.append(calls["units"])
            times.sort()
            print(json.dumps({"storage": storage, "series": expected, "answered": answered, "range": label,
                              "median_ms": median(times) * 1000,
                              "p95_ms": times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)] * 1000,
                              "requests": median(requests), "units": median(units),
                              "cpu_ms": median(own_cpu) * 1000, "moto_cpu_ms": median(moto_cpu) * 1000}), flush=True)


def run_child(storage: str, env: dict[str, str], workdir: Path, count: int, renders: int,
              moto_pid: int) -> list[dict]:
    child_env = dict(os.environ, **env, DJANGO_SETTINGS_MODULE="graphite.settings",
                     PYTHONPATH=f"{workdir}{os.pathsep}{REPO}", BENCH_MOTO_PID=str(moto_pid))
    if storage == "turok":
        from turok_core.dev.stack import prepare_graphite_storage

        prepare_graphite_storage(workdir / "graphite-turok")
        child_env.update(GRAPHITE_SETTINGS_MODULE="turok_core.dev.graphite_settings",
                         GRAPHITE_STORAGE_DIR=str(workdir / "graphite-turok"))
    else:
        (workdir / "bench_whisper_settings.py").write_text(WHISPER_SETTINGS.format(
            storage=str(workdir / "graphite-whisper"), whisper=str(workdir / "whisper")))
        child_env.update(GRAPHITE_SETTINGS_MODULE="bench_whisper_settings")
    done = subprocess.run([sys.executable, __file__, "--child", storage, "--series", str(count),
                           "--renders", str(renders)], env=child_env, cwd=workdir, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{storage} child failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def measure_find(env: dict[str, str], sizes: list[int], queries: int, cold_runs: int = 3) -> list[tuple]:
    """Cold and warm ``IndexCache.match`` over indexes of ``sizes`` names each."""
    from turok_core.index.s3_cache import IndexCache
    from turok_core.index.s3_store import IndexStore
    from turok_core.model.config import load_config
    from turok_core.runtime.aws import make_client
    from turok_core.runtime.provision import provision_bucket

    rows = []
    for size in sizes:
        config = load_config(environ=dict(env, TUROK_INDEX_PREFIX=f"find-{size}/"))
        s3 = make_client("s3", config)
        provision_bucket(s3, config)  # (kept if it exists) so --series 0 measures find alone
        # 10 metrics × 100 hosts × 10 services × (size / 10,000) clusters
        names = [f"dc.c{c:03d}.svc{s}.h{h:02d}.m{m}" for c in range(size // 10_000) for s in range(10)
                 for h in range(100) for m in range(10)]
        started = time.monotonic()
        IndexStore(s3, config).add_names(names)
        print(f"  indexed {len(names):,} names in {time.monotonic() - started:.0f} s", flush=True)
        # cold: a new cache (a reader's first query): every shard downloaded, the tree built
        cold = []
        for _ in range(cold_runs):
            cache = IndexCache(s3, config)
            started = time.perf_counter()
            cache.match("dc.c000.svc0.h00.m0")
            cold.append(time.perf_counter() - started)
        rows.append((size, "cold: first query of a new cache", "dc.c000.svc0.h00.m0", 1, median(cold) * 1000))
        cases = (("one name", "dc.c000.svc0.h00.m0"), ("a host's 10 leaves", "dc.c000.svc0.h00.*"),
                 ("glob over 4 levels", "dc.c00[0-9].svc[0-9].h0[0-9].m1"), ("top level", "*"))
        for label, pattern in cases:
            warm = []
            for _ in range(queries):
                started = time.perf_counter()
                matched = len(cache.match(pattern))
                warm.append(time.perf_counter() - started)
            rows.append((size, f"warm: {label}", pattern, matched, median(warm) * 1000))
        for row in rows[-5:]:
            print(f"  find {row[0]:>9,} names  {row[1]:34s} {row[3]:>6,} matched  {row[4]:10.3f} ms", flush=True)
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--renders", type=int, default=7, help="timed renders per case (after one warm-up)")
    parser.add_argument("--find-names", default="100000,1000000", help="index sizes for find ('' = none)")
    parser.add_argument("--find-queries", type=int, default=20)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        measure_child(args.child, args.series, args.renders)
        return 0

    print(f"reads: {args.series:,} series (1m:1d,5m:7d), {args.renders} renders per case; {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-reads-"))
    moto_port = free_port()
    moto = subprocess.Popen(moto_command(moto_port), env=moto_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(moto_port, 30, moto)
        env = config_env(moto_port, workdir, "render/")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            os.environ[key] = env[key]  # moto's fake credentials, for this process's clients
        now = int(time.time())
        if args.series:
            load(env, workdir, args.series, now)
            results = run_child("turok", env, workdir, args.series, args.renders, moto.pid) \
                + run_child("whisper", env, workdir, args.series, args.renders, moto.pid)
            print("\n| series | range | Turok median / p95 ms | whisper median / p95 ms | Turok / whisper (median) "
                  "| DynamoDB requests per render | read units per render "
                  "| CPU ms per render: Turok's graphite-web / moto / whisper's graphite-web |")
            print("|---|---|---|---|---|---|---|---|")
            by_case = {(r["storage"], r["series"], r["range"]): r for r in results}
            for expected, _ in patterns(args.series):
                for label, _ in RANGES:
                    t, w = by_case[("turok", expected, label)], by_case[("whisper", expected, label)]
                    for r in (t, w):
                        if r["answered"] != expected:
                            print(f"  ({r['storage']} answered {r['answered']} series, not {expected})")
                    print(f"| {expected:,} | {label} | {t['median_ms']:.1f} / {t['p95_ms']:.1f} "
                          f"| {w['median_ms']:.1f} / {w['p95_ms']:.1f} | {t['median_ms'] / w['median_ms']:.2f}× "
                          f"| {t['requests']:g} | {t['units']:g} "
                          f"| {t['cpu_ms']:.0f} / {t['moto_cpu_ms']:.0f} / {w['cpu_ms']:.0f} |", flush=True)
        sizes = [int(s) for s in args.find_names.split(",") if s]
        if sizes:
            rows = measure_find(env, sizes, args.find_queries)
            print("\n| names in index | query | pattern | matched | ms (median) |")
            print("|---|---|---|---|---|")
            for size, label, pattern, matched, millis in rows:
                print(f"| {size:,} | {label} | `{pattern}` | {matched:,} | {millis:.3f} |")
    finally:
        stop(moto)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
