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
- write: one new series added to the tag index (what the indexer does for it: one shard read,
  merged and rewritten with a compare-and-swap), its time and the bytes of the shard rewritten;
- refresh: that one changed shard seen by two warm caches, ``TagCache`` (its ``TagIndex``
  updated with the shard's changes) and, as the anchor, a ``TagCache`` that rebuilds its index
  from all the names as before the update existed; for each, the refresh and the two passes over
  the warm queries that follow (after a rebuild, the first pass scans the tags again, the second
  builds their lists);
- memory: RSS growth of a child process loading the names into a ``NameList`` (the name index's
  reader, the anchor), a ``TagIndex`` before any query and a ``TagIndex`` with every tag built.

    .venv/bin/python bench/tags.py [--series 1000000] [--queries 20] [--cold-runs 3] [--tag-shards 64]
    .venv/bin/python bench/tags.py --warm-only --series 10000000   # the warm table alone, no S3

Everything binds 127.0.0.1; moto's latency is part of the cold figures.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, index_bench_config, machine, median, rss_bytes, start_moto, stop

from turok_core.index.shards import shard_of  # common put the checkout first on the path

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


class Clock:
    """A clock the benchmark moves, so a cache refreshes exactly when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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


def timing(cache, method: str) -> list[float]:
    """The ms each later call of ``cache``'s ``method`` takes (appended to the list returned)."""
    spent: list[float] = []
    original = getattr(cache, method)

    def timed_method(*args):
        started = time.perf_counter()
        try:
            return original(*args)
        finally:
            spent.append((time.perf_counter() - started) * 1000)

    setattr(cache, method, timed_method)
    return spent


def closest(target: float) -> int:
    """The tag whose number of values is nearest ``target`` (by ratio)."""
    return min(range(len(VALUES)), key=lambda tag: abs(math.log(VALUES[tag] / target)))


def warm_cases(count: int) -> list:
    """(label, a query of a TagIndex) of the warm table: the same expressions at every size, and
    above a million the ones matching as many series there as these do at a million."""
    cases = [
        ("warm: selective (target ≤ 20 ms)", lambda index: index.find_series(["t8=v1234", "t1=~v[0-3]"])),
        ("warm: selective, two exact", lambda index: index.find_series(["name=bench.m3", "t7=v4321"])),
        ("warm: ~10,000 matches (target ≤ 200 ms)", lambda index: index.find_series(["t5=v42"])),
        ("warm: ~10,000 matches, regex and negation",
         lambda index: index.find_series(["name=~bench\\.m1[0-9]", "t4=~v1$", "t2!=v3"])),
        ("warm: autocomplete tags, no expr", lambda index: index.auto_complete_tags([], "t", 100)),
        ("warm: autocomplete tags, expr name= (Grafana)",
         lambda index: index.auto_complete_tags(["name=bench.m3"], "", 10000)),
        ("warm: autocomplete values, no expr, prefix",
         lambda index: index.auto_complete_values([], "t9", "v123", 100)),
        ("warm: autocomplete values, expr name= and a tag, prefix (Grafana)",
         lambda index: index.auto_complete_values(["name=bench.m3", "t6=v7"], "t9", "v1", 10000)),
        ("warm: autocomplete values, expr name=, 10,000 limit (template variable)",
         lambda index: index.auto_complete_values(["name=bench.m3"], "t5", "", 10000)),
    ]
    selective, ten_thousand, regex = closest(count / 25), closest(count / 10_000), closest(count * 0.45 / 10_000)
    if count > 1_000_000:
        cases[3:3] = [
            (f"warm: selective at this size, t{selective}", lambda index: index.find_series(
                [f"t{selective}=v1234", "t1=~v[0-3]"])),
            (f"warm: ~10,000 matches at this size, t{ten_thousand}",
             lambda index: index.find_series([f"t{ten_thousand}=v42"])),
            (f"warm: ~10,000 matches at this size, regex and negation, t{regex}",
             lambda index: index.find_series(["name=~bench\\.m1[0-9]", f"t{regex}=~v1$", "t2!=v3"])),
        ]
    return cases


def refresh_costs(s3, config, tag_store, updating, rebuilding, cases, count: int) -> dict:
    """One new series written to the tag index, then seen by a warm cache of each kind."""
    clock = Clock()
    caches = {"update": updating(s3, config, clock=clock), "rebuild": rebuilding(s3, config, clock=clock)}
    for cache in caches.values():
        for _ in range(3):  # the first pass scans the tags, the second builds their lists: warm after
            for _label, call in cases:
                call(cache.tag_index)
    new = "bench.new" + "".join(f";t{tag}=v{tag}" for tag in range(len(VALUES)))  # tagged like the others
    started = time.perf_counter()
    tag_store.add_names([new])
    write_ms = (time.perf_counter() - started) * 1000
    shards = tag_store.shard_count()
    key = tag_store.layout.shard_key(shard_of(new, shards), shards)
    shard_bytes = s3.head_object(Bucket=config.index_bucket, Key=key)["ContentLength"]
    listing = s3.get_paginator("list_objects_v2").paginate(Bucket=config.index_bucket,
                                                           Prefix=f"{config.tag_index_prefix}shards-")
    sizes = [item["Size"] for page in listing for item in page.get("Contents", [])]
    found: dict = {"write_ms": write_ms, "shard_bytes": shard_bytes, "mean_shard_bytes": sum(sizes) / len(sizes)}
    clock.now += 2 * config.index_refresh_seconds
    for kind, cache in caches.items():
        gc.collect()
        spent = timing(cache, "_update" if kind == "update" else "_build")
        started = time.perf_counter()
        cache.maybe_refresh()
        times = [(time.perf_counter() - started) * 1000]
        found[f"{kind} structure"] = sum(spent)
        for _ in range(2):
            started = time.perf_counter()
            for _label, call in cases:
                call(cache.tag_index)
            times.append((time.perf_counter() - started) * 1000)
        assert new in cache.tag_index, kind
        found[kind] = times
        found["shard_names"] = len(cache._objects[(shards, shard_of(new, shards))].names)
        print(f"  refresh after one new series, {kind}: {', '.join(f'{t:.0f}' for t in times)} ms", flush=True)
    assert (caches["update"].updates, caches["rebuild"].rebuilds) == (1, 2)
    return found


def warm_only(count: int, queries: int) -> int:
    """The warm table alone, on a ``TagIndex`` of the names (what a warm ``TagCache`` answers from)."""
    from turok_core.index.tag_index import TagIndex

    print(f"tags, warm only: {count:,} tagged series; {machine()}", flush=True)
    index = TagIndex(series(count), from_tag_index=True)
    print("\n| query | answers | ms (median) |")
    print("|---|---|---|")
    for label, call in warm_cases(count):
        millis, answer = timed(lambda call=call: call(index), queries)
        print(f"| {label} | {len(answer):,} | {millis:.2f} |", flush=True)  # type: ignore[arg-type]
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--tag-shards", type=int, default=64, help="the tag index's shard count")
    parser.add_argument("--warm-only", action="store_true",
                        help="only the warm queries, on a TagIndex of the names (no S3, no memory)")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    if args.warm_only:
        return warm_only(args.series, args.queries)
    sys.path.insert(0, str(REPO))
    from turok_core.index.s3_cache import IndexCache
    from turok_core.index.s3_store import IndexStore
    from turok_core.index.tag_cache import TagCache, make_tag_store
    from turok_core.index.tag_index import TagIndex

    class RebuildingTagCache(TagCache):
        """The anchor: a cache that builds its index anew from all the names on any change."""

        def _update(self, current: TagIndex, changes: list) -> None:
            return None
    from turok_core.runtime.aws import make_client
    from turok_core.runtime.provision import provision_bucket

    print(f"tags: {args.series:,} tagged series, 10 tags ({', '.join(map(str, VALUES))} values), "
          f"{args.tag_shards} tag index shards; {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-tags-"))
    moto, moto_port = start_moto()
    try:
        config = index_bench_config(moto_port, "bench-tags", args.tag_shards)
        s3 = make_client("s3", config)
        provision_bucket(s3, config)
        names = series(args.series)
        started = time.monotonic()
        tag_store = make_tag_store(s3, config)
        tag_store.add_names(names)
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
        cases = warm_cases(args.series)
        for label, call in cases:
            millis, answer = timed(lambda call=call, cache=cache: call(cache.tag_index), args.queries)
            rows.append((label, "", len(answer), millis))  # type: ignore[arg-type]
            print(f"  {label:70s} {len(answer):>7,} answers {millis:9.2f} ms", flush=True)
        del cache
        gc.collect()
        refresh = refresh_costs(s3, config, tag_store, TagCache, RebuildingTagCache, cases, args.series)
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
    print(f"\nwrite: one new series rewrote one shard of {refresh['shard_bytes']:,} bytes of gzip "
          f"({refresh['shard_names']:,} series) in {refresh['write_ms']:.0f} ms "
          f"(mean shard {refresh['mean_shard_bytes']:,.0f} bytes)")
    print("\n| after one shard changed | refresh ms | of which the index | first pass ms | second pass ms "
          "| total ms |")
    print("|---|---|---|---|---|---|")
    for kind, label in (("update", "TagCache (updates the changed shard)"),
                        ("rebuild", "anchor: rebuilt from all the names")):
        found = refresh[kind]
        print(f"| {label} | {found[0]:.0f} | {refresh[f'{kind} structure']:.1f} | {found[1]:.0f} | {found[2]:.0f} "
              f"| {sum(found):.0f} |")
    print(f"\nrebuild / update: refresh alone {refresh['rebuild'][0] / refresh['update'][0]:.1f}×, "
          f"refresh and both passes {sum(refresh['rebuild']) / sum(refresh['update']):.1f}×")
    print("\n| loaded in a process | RSS growth MB | / NameList |")
    print("|---|---|---|")
    for kind, label in (("names", "NameList (the name index's reader, anchor)"),
                        ("tags-lazy", "TagIndex, no tag built yet"), ("tags-built", "TagIndex, every tag built")):
        print(f"| {label} | {mem[kind]:.0f} | {mem[kind] / mem['names']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
