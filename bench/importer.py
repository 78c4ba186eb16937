"""Issue 15: ``turok-import`` of whisper files of ``10s:1d,1min:30d,1h:2y`` with 40 days of data each.

    .venv/bin/python bench/importer.py [--files 10000] [--variants 8] [--jobs 2] [--keep]

Makes ``--variants`` whisper files with the ``whisper`` module (10 s points for the last day,
1-minute points for days 1-30 and hourly ones for days 30-40, as whisper stores 40 days of a
metric: ``update_many`` at one "now" puts each point in the first archive covering it) and
hard-links them into a carbon tree of ``--files`` files (so the tree costs the disk of the
variants; the files are read from the page cache, as a second pass over a real tree would be).
Then imports the tree with the importer's own code into a ``MemoryBlockStore`` (no DynamoDB: the
CPU measured is the importer's reading, planning, rolling up and block encoding) with ``--jobs``
worker processes, and prints:

* files per second (wall) and imported points per CPU-second of the import (all processes);
* write units per 1,000 imported points, against the anchor of a day of live data of the same
  schema written by turokd (each block written once);
* the largest resident memory of a worker and of the parent (bounded by the parallelism);
* the anchor: ``whisper.fetch`` of every archive of the same files, in this process (what carbon's
  own reader spends on them), as a ratio;
* the extrapolation to 1,000,000 files on this machine, and the DynamoDB bill.

With ``--moto-files N`` it then runs the real command (``turok-import --jobs 2``) on N of the files
against a moto server twice, with ``conditional_writes`` on (a conditional PutItem per block, the
default) and off (BatchWriteItem), and prints the command's CPU (its worker processes included;
moto's apart) per block: what the boto3 calls add to the importer's own work.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

from common import free_port, human, machine, moto_command, moto_env, stop, wait_port

from turok_core.importer.cost import DOLLARS_PER_READ_UNIT, DOLLARS_PER_WRITE_UNIT
from turok_core.importer.layout import TreeFile, walk
from turok_core.importer.run import FileImporter
from turok_core.model.config import TurokConfig
from turok_core.model.schemas import SchemaSet
from turok_core.storage.block_layout import block_span
from turok_core.storage.memory import MemoryBlockStore

ARCHIVES = [(10, 8640), (60, 43200), (3600, 17520)]  # 10s:1d, 1min:30d, 1h:2y
SCHEMAS = "[all]\npattern = .*\nretentions = 10s:1d,1min:30d,1h:2y\n"
DAY = 86400


def make_variant(path: Path, seed: int, now: int) -> None:
    import random

    import whisper

    rng = random.Random(seed)
    whisper.create(str(path), ARCHIVES, xFilesFactor=0.5, aggregationMethod="average")
    value = rng.uniform(0, 100)
    points = []
    for step, start, end in ((3600, now - 40 * DAY, now - 30 * DAY), (60, now - 30 * DAY + 3600, now - DAY),
                             (10, now - DAY + 60, now)):
        for t in range(start - start % step + step, end, step):
            value = round(max(0.0, value + rng.uniform(-1, 1)), 2)  # a gauge with two decimals
            points.append((t, value))
    whisper.update_many(str(path), points, now=now)


def make_tree(root: Path, files: int, variants: int, now: int) -> None:
    sources = []
    for seed in range(variants):
        source = root / f"variant{seed}.src"
        make_variant(source, seed, now)
        sources.append(source)
    for i in range(files):
        path = root / "whisper" / "servers" / f"host{i // 100:04d}" / f"metric{i % 100:02d}.wsp"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[i % variants], path)


_importer: Optional[FileImporter] = None


def _start(schemas_path: str, now: int) -> None:
    global _importer
    config = TurokConfig(schemas_file=schemas_path)
    _importer = FileImporter(config, SchemaSet(Path(schemas_path)), MemoryBlockStore(config), now)


def _import_chunk(paths: list[tuple[str, str]]) -> tuple[int, int, int, int, float, int]:
    """(files, points, blocks, write units, CPU seconds, max RSS KB) of importing ``paths`` here."""
    assert _importer is not None
    cpu = time.process_time()
    files = points = blocks = units = 0
    for path, relative in paths:
        outcome = _importer(TreeFile(path, relative), (path, 0, 0))
        assert not outcome.error, outcome.error
        files += 1
        points += outcome.points
        blocks += outcome.blocks
        units += outcome.stats.write_units
    _importer.store._tables.clear()  # type: ignore[attr-defined]  # memory is the store's, not the importer's
    return files, points, blocks, units, time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def live_day_units_per_1000() -> float:
    """Write units per 1,000 points of one day of live data at this schema: each block once (1 unit)."""
    blocks = sum(DAY // block_span(step, 0) for step, _points in ARCHIVES)
    return blocks / (DAY / ARCHIVES[0][0]) * 1000


def run_on_moto(workdir: Path, files: list[tuple[str, str]], now: int, conditional: bool) -> tuple[float, float, int]:
    """(wall s, CPU s of the command and its workers, blocks written) of ``turok-import`` on ``files``."""
    import subprocess

    from turok_core.dev.stack import write_config
    from turok_core.runtime.provision import provision

    port = free_port()
    moto = subprocess.Popen(moto_command(port), env=moto_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30, moto)
        tree = workdir / f"moto-tree-{int(conditional)}"
        for path, relative in files:
            target = tree / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        config = TurokConfig(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_region="us-east-1",
                             schemas_file=str(workdir / "schemas.conf"), conditional_writes=conditional)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(key, "bench")  # moto takes any
        provision(config)
        ini = workdir / f"moto-{int(conditional)}.ini"
        write_config(config, ini)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TUROK_", "AWS_"))}
        env.update(PYTHONPATH=str(Path(__file__).resolve().parent.parent), AWS_ACCESS_KEY_ID="bench",
                   AWS_SECRET_ACCESS_KEY="bench")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "turok_core.importer.cli", "--config", str(ini), "--jobs", "2",
                               "--journal", str(workdir / f"moto-{int(conditional)}.journal"), "--now", str(now),
                               str(tree)], env=env, capture_output=True, text=True, timeout=3600)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"turok-import failed: {done.stderr[-2000:]}")
        written = int(done.stdout.rsplit("blocks, ", 1)[1].split(" written", 1)[0])
        return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), written
    finally:
        stop(moto)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=20, help="files a worker imports per task")
    parser.add_argument("--anchor-files", type=int, default=200, help="files whisper.fetch reads for the anchor")
    parser.add_argument("--moto-files", type=int, default=0, help="files imported by the command on a moto server")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    now = int(time.time())
    print(f"Import: {args.files:,} whisper files of 10s:1d,1min:30d,1h:2y with 40 days each, {args.jobs} worker "
          f"process(es); {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-import-"))
    try:
        started = time.monotonic()
        make_tree(workdir, args.files, args.variants, now)
        print(f"  tree made in {time.monotonic() - started:.0f} s", flush=True)
        schemas = workdir / "schemas.conf"
        schemas.write_text(SCHEMAS)
        files = [(f.path, f.relative) for f in walk(str(workdir / "whisper"))]
        chunks = [files[i:i + args.chunk] for i in range(0, len(files), args.chunk)]
        parent_cpu = time.process_time()
        started = time.monotonic()
        totals = [0, 0, 0, 0, 0.0]
        worker_rss = 0
        with ProcessPoolExecutor(args.jobs, initializer=_start, initargs=(str(schemas), now)) as pool:
            for done in pool.map(_import_chunk, chunks):
                for i in range(5):
                    totals[i] += done[i]
                worker_rss = max(worker_rss, done[5])
        wall = time.monotonic() - started
        n_files, points, blocks, units, cpu = totals
        cpu += time.process_time() - parent_cpu
        parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        import whisper

        anchor_files = files[:args.anchor_files]
        anchor_cpu = time.process_time()
        anchor_points = 0
        for path, _name in anchor_files:
            for step, count in ARCHIVES:
                _info, values = whisper.fetch(path, now - step * count, now, now=now, archiveToSelect=step)
                anchor_points += sum(v is not None for v in values)
        anchor_cpu = time.process_time() - anchor_cpu
        moto_runs = [(conditional, *run_on_moto(workdir, files[:args.moto_files], now, conditional))
                     for conditional in (True, False)] if args.moto_files else []
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    per_file_cpu = cpu / n_files
    anchor_per_file = anchor_cpu / len(anchor_files)
    units_per_1000 = units / points * 1000
    live = live_day_units_per_1000()
    print("\n| files | points | blocks (= write units at 1 KB) | wall s | files/s | points/CPU-s | CPU ms/file "
          "| write units per 1,000 points | worker / parent max RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {n_files:,} | {points:,} | {blocks:,} ({units:,}) | {wall:.1f} | {n_files / wall:.0f} "
          f"| {human(points / cpu)} | {per_file_cpu * 1000:.1f} | {units_per_1000:.2f} "
          f"| {worker_rss / 1024:.0f} MB / {parent_rss / 1024:.0f} MB |")
    print(f"\nanchor: whisper.fetch of every archive of {len(anchor_files)} of the files: "
          f"{anchor_per_file * 1000:.1f} ms CPU per file ({human(anchor_points / anchor_cpu)} points/CPU-s); "
          f"import / whisper.fetch: "
          f"{per_file_cpu / anchor_per_file:.2f}x CPU per file")
    print(f"anchor: a day of live data at this schema, each block written once: {live:.2f} write units per "
          f"1,000 points; import / live: {units_per_1000 / live:.2f}x")
    for conditional, moto_wall, moto_cpu, written in moto_runs:
        mode = "conditional PutItem per block" if conditional else "BatchWriteItem"
        print(f"on moto, {args.moto_files} files, {mode}: {written:,} blocks in {moto_wall:.1f} s, command CPU "
              f"{moto_cpu:.1f} s = {moto_cpu / written * 1000:.2f} ms per block (in memory: "
              f"{cpu / blocks * 1000:.2f}); 10,000 files: {moto_cpu / written * blocks / n_files * 10000 / 3600:.2f} "
              f"CPU-hours")
    million = 1_000_000 / (n_files / wall)
    cpu_bound = 1_000_000 * per_file_cpu / max(1, args.jobs)
    dollars = blocks / n_files * 1e6 * (DOLLARS_PER_WRITE_UNIT + DOLLARS_PER_READ_UNIT)
    print(f"1,000,000 files: {million / 3600:.1f} h at this run's wall rate, {cpu_bound / 3600:.1f} h at its CPU per "
          f"file on {args.jobs} free core(s) (DynamoDB calls apart); {blocks / n_files * 1e6:,.0f} blocks, about "
          f"${dollars:,.0f} on demand")
    return 0


if __name__ == "__main__":
    sys.exit(main())
