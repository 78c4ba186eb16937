"""Benchmark of issue 14: the tag index with a million tagged series.

N tagged series (default 1,000,000) ``bench.m<K>;t0=v…;…;t9=v…`` (20 names, ten tags with 2, 5,
10, 20, 50, 100, 1,000, 10,000, 50,000 and 100,000 values, drawn at random) are put in the tag
index on a moto server this script starts (``make_tag_store``: 64 shards, and 256 with
``--tag-shards 256``) and, as the anchor, in the name index (``IndexStore``: 64 shards). Then:

- cold: a new ``TagCache``'s first query, the index fetched from S3 and the tags it uses built
  (median of 3), beside a new ``IndexCache``'s first glob over the same names (the anchor);
- warm: ``find_series`` (what ``seriesByTag`` and ``/tags/findSeries`` call) for a selective
  expression (tens of matches), one matching ~10,000 series, a regex and a negation, and the
  autocomplete calls Grafana makes (``auto_complete_tags``/``_values`` with and without ``expr``),
  median of 20 after two warm-ups (the first query naming a tag scans it, the second builds its
  posting lists: both timed apart as "second query");
- memory: RSS growth of a child process loading the names into a ``NameList`` (the name index's
  reader, the anchor), a ``TagIndex`` before any query and a ``TagIndex`` with every tag built.

    .venv/bin/python bench/tags.py [--series 1000000] [--queries 20]

Everything binds 127.0.0.1; moto's latency is part of the cold figures.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, free_port, machine, median, moto_command, moto_env, rss_bytes, stop, wait_port

VALUES = (2, 5, 10, 20, 50, 100, 1000, 10_000, 50_000, 100_000)
NAMES = 20


def series(count: int, seed: int = 14) -> list[str]:
    """``count`` distinct tagged series, drawn at random (tags already in carbon's order)."""
    rnd = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        tags = "".join(f";t{tag}=v{rnd.randrange(values)}" for tag, values in enumerate(VALUES))
        found.add(f"bench.m{rnd.randrange(NAMES)}{tags}")
    return sorted(found)


def timed(function, repeat: int) -> tuple[float, object]:
    """(median ms over ``repeat`` calls after two warm-ups, the last answer): the first query naming
    a tag scans it, the second builds its posting lists."""
    function()
    answer = function()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = function()
        times.append((time.perf_counter() - started) * 1000)
    return median(times), answer


def memory_child(kind: str, path: str) -> None:
    """Print the RSS growth of loading the names in ``path`` as ``kind``."""
    from turok_core.index.names import NameList
    from turok_core.index.tag_index import TagIndex

    gc.collect()
    before = rss_bytes(os.getpid())
    with gzip.open(path, "rt") as handle:
        names = handle.read().split("\n")
    if kind == "names":
        built: object = NameList(names)
    else:
        built = TagIndex(names)
        if kind == "tags-built":
            for tag in built.tags():
                built.values(tag)
    del names
    gc.collect()
    print(rss_bytes(os.getpid()) - before, len(built))  # type: ignore[arg-type]


def memory(names: list[str], workdir: Path) -> dict[str, float]:
    path = workdir / "names.gz"
    with gzip.open(path, "wt", compresslevel=1) as handle:
        handle.write("\n".join(names))
    found = {}
    for kind in ("names", "tags-lazy", "tags-built"):
        done = subprocess.run([sys.executable, __file__, "--memory-child", kind, str(path)],
                              capture_output=True, text=True, check=True, timeout=600)
        found[kind] = int(done.stdout.split()[0]) / 2**20
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--tag-shards", type=int, default=64, help="the tag index's shard count")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    sys.path.insert(0, str(REPO))
    from turok_core.index.s3_cache import IndexCache
    from turok_core.index.s3_store import IndexStore
    from turok_core.index.tag_cache import TagCache, make_tag_store
    from turok_core.model.config import load_config
    from turok_core.runtime.aws import make_client
    from turok_core.runtime.provision import provision_bucket

    print(f"tags: {args.series:,} tagged series, 10 tags ({', '.join(map(str, VALUES))} values), "
          f"{args.tag_shards} tag index shards; {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-tags-"))
    moto_port = free_port()
    moto = subprocess.Popen(moto_command(moto_port), env=moto_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(moto_port, 30, moto)
        env = {"TUROK_AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}", "TUROK_AWS_REGION": "us-east-1",
               "TUROK_INDEX_BUCKET": "bench-tags", "TUROK_INDEX_REFRESH_SECONDS": "3600",
               "TUROK_TAG_INDEX_SHARDS": str(args.tag_shards)}
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        config = load_config(environ=env)
        s3 = make_client("s3", config)
        provision_bucket(s3, config)
        names = series(args.series)
        started = time.monotonic()
        make_tag_store(s3, config).add_names(names)
        IndexStore(s3, config).add_names(names)
        print(f"  indexed {len(names):,} series in both indexes in {time.monotonic() - started:.0f} s", flush=True)

        rows: list[tuple[str, str, int, float]] = []
        selective = ["t8=v1234", "name=~bench\\.m1"]
        cold, loads, second, anchor = [], [], [], []
        for _ in range(args.cold_runs):
            gc.collect()
            cache = TagCache(s3, config)
            started = time.perf_counter()
            cache.maybe_refresh()  # what the first query starts with: every shard fetched, the names kept
            loads.append((time.perf_counter() - started) * 1000)
            matched = len(cache.tag_index.find_series(selective))  # then the tags it names are scanned
            cold.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            cache.tag_index.find_series(selective)  # builds the posting lists of the tags it needs
            second.append((time.perf_counter() - started) * 1000)
            del cache
            gc.collect()
            name_cache = IndexCache(s3, config)
            started = time.perf_counter()
            name_cache.match("bench.m1;t0=v0")
            anchor.append((time.perf_counter() - started) * 1000)
            del name_cache
        rows.append(("cold: first query of a new TagCache (target ≤ 2 s)", " ".join(selective), matched,
                     median(cold)))
        rows.append(("… of which fetching the shards and keeping the names", "", 0, median(loads)))
        rows.append(("second query of that TagCache (builds the posting lists)", "", matched, median(second)))
        rows.append(("anchor, cold: first query of a new IndexCache over the same names", "", 0, median(anchor)))
        cache = TagCache(s3, config)
        cache.tag_index.find_series(["t0=v0"])
        cases = [
            ("warm: selective (target ≤ 20 ms)", lambda: cache.tag_index.find_series(["t8=v1234", "t1=~v[0-3]"])),
            ("warm: selective, two exact", lambda: cache.tag_index.find_series(["name=bench.m3", "t7=v4321"])),
            ("warm: ~10,000 matches (target ≤ 200 ms)", lambda: cache.tag_index.find_series(["t5=v42"])),
            ("warm: ~10,000 matches, regex and negation",
             lambda: cache.tag_index.find_series(["name=~bench\\.m1[0-9]", "t4=~v1$", "t2!=v3"])),
            ("warm: autocomplete tags, no expr", lambda: cache.tag_index.auto_complete_tags([], "t", 100)),
            ("warm: autocomplete tags, expr name= (Grafana)",
             lambda: cache.tag_index.auto_complete_tags(["name=bench.m3"], "", 10000)),
            ("warm: autocomplete values, no expr, prefix",
             lambda: cache.tag_index.auto_complete_values([], "t9", "v123", 100)),
            ("warm: autocomplete values, expr name= and a tag, prefix (Grafana)",
             lambda: cache.tag_index.auto_complete_values(["name=bench.m3", "t6=v7"], "t9", "v1", 10000)),
            ("warm: autocomplete values, expr name=, 10,000 limit (template variable)",
             lambda: cache.tag_index.auto_complete_values(["name=bench.m3"], "t5", "", 10000)),
        ]
        for label, call in cases:
            millis, answer = timed(call, args.queries)
            rows.append((label, "", len(answer), millis))  # type: ignore[arg-type]
            print(f"  {label:70s} {len(answer):>7,} answers {millis:9.2f} ms", flush=True)
        print("  memory …", flush=True)
        mem = memory(names, workdir)
    finally:
        stop(moto)
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| query | answers | ms (median) |")
    print("|---|---|---|")
    for label, expr, answers, millis in rows:
        print(f"| {label}{f' `{expr}`' if expr else ''} | {answers:,} | {millis:.2f} |")
    print(f"\ncold TagCache / cold IndexCache: {median(cold) / median(anchor):.2f}×")
    print("\n| loaded in a process | RSS growth MB | / NameList |")
    print("|---|---|---|")
    for kind, label in (("names", "NameList (the name index's reader, anchor)"),
                        ("tags-lazy", "TagIndex, no tag built yet"), ("tags-built", "TagIndex, every tag built")):
        print(f"| {label} | {mem[kind]:.0f} | {mem[kind] / mem['names']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
