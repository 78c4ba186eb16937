"""Issue 13: the whole Turok pipeline against carbon-cache, points per CPU-second, in one run.

    .venv/bin/python bench/pipeline.py [--metrics 1000,10000] [--slots 90] [--connections 2]
        [--age-hours 13] [--close-delay 1] [--receivers turok,carbon-cache] [--keep]
        [--profile-turokd FILE [--profile-rate 50] [--py-spy PATH]]

For each ``--metrics`` count, the same plaintext lines (``--slots`` closed 10 s slots per metric,
starting ``--age-hours`` back on an hour boundary, so every 10 s and 1-minute block they fall in has
closed (a 1-minute block is 12 hours long at the default spans) and turokd writes it as soon as its
close delay has passed) go over ``--connections`` TCP
connections to, in turn:

* Turok: real ``twistd`` gateway, turokd and indexer from this checkout on a moto server
  (``bench/turok_processes.py``), default settings but ``block_close_delay_seconds``; measured
  until the metrics and index queues are empty (turokd deletes a message only once its data is
  in DynamoDB) and every process's CPU stopped rising; CPU of each from /proc, moto's apart.
  Then checked: every slot read back through ``BlockStore.fetch_series`` (as the finder reads),
  the day tables scanned (items and bytes per resolution), and turokd's own counters
  (``write_units``, ``items_written``) from the line it logs when it stops;
* carbon-cache 1.1.10 (``plaintext_ingest.CarbonCache``) writing whisper with the same
  retentions (``10s:1d,1min:30d,1h:2y``, average, xFilesFactor 0.5; files created with
  fallocate as carbon.conf.example sets on Linux), measured until its ``committedPoints``
  reach every point and its CPU stopped rising.

``--profile-turokd FILE`` samples turokd with py-spy (``--profile-rate`` Hz, only the thread
holding the GIL: threads waiting for it would show as busy on the line they wait at) while the
points flow, into ``FILE`` (raw folded stacks; with several sizes, ``FILE`` gets the size as a
suffix); py-spy is not part of the stack: give its path with ``--py-spy`` if it is not on PATH.

Prints per size a table (CPU s, points per CPU-second, wall) and the ratios pipeline /
carbon-cache and turokd / carbon-cache. Everything binds 127.0.0.1 and is stopped at the end.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from common import cpu_seconds, human, machine, stop
from plaintext_ingest import CarbonCache, measure, send_all
from turok_processes import TurokProcesses, metric_names, slot_lines, value_text, wait_idle

STEP = 10
COARSE_STEP = 60
RETENTIONS = "10s:1d,1min:30d,1h:2y"  # Turok's default schema
CARBON_RETENTIONS = "10s:1d,1m:30d,1h:2y"  # the same; carbon 1.1.10 spells minutes "m"
CARBON_SETTINGS = "WHISPER_FALLOCATE_CREATE = True"


@dataclass
class TurokRun:
    points: int
    cpu: dict[str, float]  # service → CPU seconds (moto included, reported apart)
    wall: float
    finished: bool
    verified: int = 0  # slots read back with the value sent
    coarse_verified: int = 0  # 1-minute slots read back as the average of their six 10 s slots
    coarse_slots: int = 0
    stored: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # step → (items, bytes, units)
    counters: dict[str, float] = field(default_factory=dict)  # turokd's, at its stop

    @property
    def pipeline_cpu(self) -> float:
        return sum(cpu for name, cpu in self.cpu.items() if name != "moto")


def workload(metrics: int, slots: int, age_hours: float, connections: int) -> tuple[list[str], int, list[bytes]]:
    """Names, first slot stamp and one payload per connection: every metric's slot 0, then slot 1, …"""
    names = metric_names(metrics)
    first = int(time.time() - age_hours * 3600) // 3600 * 3600
    parts: list[list[bytes]] = [[] for _ in range(connections)]
    for slot in range(slots):
        for index, payload in enumerate(slot_lines(names, slot, first + slot * STEP, connections)):
            parts[index].append(payload)
    return names, first, [b"".join(part) for part in parts]


def run_turok(workdir: Path, names: list[str], first: int, slots: int, payloads: list[bytes],
              args: argparse.Namespace) -> TurokRun:
    processes = TurokProcesses(workdir, {"block_close_delay_seconds": args.close_delay})
    profiler = None
    try:
        processes.start()
        assert processes.config is not None
        pids = processes.pids()
        services = {name: pid for name, pid in pids.items() if name != "moto"}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        profiler = start_profiler(args, pids["turokd-0"], len(names))
        sender = threading.Thread(target=send_all, args=(payloads, processes.config.plaintext_port, args.timeout),
                                  daemon=True)
        t0 = time.monotonic()
        sender.start()
        cpu, end, finished = wait_idle(services, lambda: not sender.is_alive() and processes.backlog() == 0,
                                       args.timeout)
        stop_profiler(profiler)
        cpu["moto"] = cpu_seconds(pids["moto"])
        run = TurokRun(len(names) * slots, {name: cpu[name] - before[name] for name in pids}, end - t0, finished)
        series = processes.fetch_series(names, STEP, first, first + slots * STEP)
        run.verified = sum(1 for index, name in enumerate(names) for slot, value in enumerate(series.get(name, []))
                           if value is not None and abs(value - float(value_text(index, slot))) < 1e-9)
        # the 1-minute archive: whisper's average of six 10 s slots (all known, so xFilesFactor 0.5 holds)
        ratio = COARSE_STEP // STEP
        coarse = processes.fetch_series(names, COARSE_STEP, first, first + slots * STEP)
        run.coarse_slots = len(names) * (slots // ratio)
        run.coarse_verified = sum(
            1 for index, name in enumerate(names) for minute, value in enumerate(coarse.get(name, [])[:slots // ratio])
            if value is not None and abs(value - sum(float(value_text(index, minute * ratio + k))
                                                     for k in range(ratio)) / ratio) < 1e-9)
        run.stored = processes.stored()
        processes.stop_services()
        run.counters = processes.counters("turokd-0")
        return run
    finally:
        stop_profiler(profiler)
        processes.close()


def start_profiler(args: argparse.Namespace, pid: int, metrics: int) -> Optional[subprocess.Popen]:
    """py-spy recording ``pid`` into ``--profile-turokd`` (suffixed by the size when there are several)."""
    if not args.profile_turokd:
        return None
    spy = shutil.which(args.py_spy)
    if spy is None:
        print(f"  no py-spy at {args.py_spy!r}: turokd not profiled", flush=True)
        return None
    out = args.profile_turokd if "," not in args.metrics else f"{args.profile_turokd}.{metrics}"
    return subprocess.Popen([spy, "record", "-r", str(args.profile_rate), "--nonblocking", "--gil", "-f", "raw",
                             "-o", out, "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: Optional[subprocess.Popen]) -> None:
    """Stop py-spy as Ctrl-C would, so it writes its file."""
    if profiler is None or profiler.poll() is not None:
        return
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        stop(profiler)


def report(metrics: int, run: Optional[TurokRun], carbon, wall_note: str) -> None:
    print(f"\n{metrics:,} metrics: {wall_note}")
    print("| process | CPU s | pts/CPU-s | wall s |")
    print("|---|---|---|---|")
    if run is not None:
        for name in ("gateway", "turokd-0", "indexer"):
            cpu = run.cpu.get(name, float("nan"))
            print(f"| turok {name.removesuffix('-0')} | {cpu:.2f} | {human(run.points / cpu)} | |")
        print(f"| **the Turok pipeline** | {run.pipeline_cpu:.2f} | **{human(run.points / run.pipeline_cpu)}** "
              f"| {run.wall:.1f}{'' if run.finished else ' (TIMED OUT)'} |")
        print(f"| moto (the local AWS, apart) | {run.cpu['moto']:.2f} | {human(run.points / run.cpu['moto'])} | |")
    if carbon is not None:
        print(f"| carbon-cache 1.1.10 (whisper) | {carbon.cpu:.2f} | {human(carbon.per_cpu)} "
              f"| {carbon.wall:.1f}{'' if carbon.finished else ' (TIMED OUT)'} |")
    if run is not None and carbon is not None:
        print(f"pipeline / carbon-cache: {run.points / run.pipeline_cpu / carbon.per_cpu:.2f}x pts/CPU-s "
              f"(target >= 1.5x, goal 3x); turokd / carbon-cache: "
              f"{run.points / run.cpu['turokd-0'] / carbon.per_cpu:.2f}x")
    if run is not None:
        print(f"Turok stored: {run.verified:,} of {run.points:,} slots read back with the value sent, "
              f"{run.coarse_verified:,} of {run.coarse_slots:,} 1-minute slots with their average; "
              + ", ".join(f"{step} s: {items:,} items, {size:,} bytes"
                          for step, (items, size, _units) in sorted(run.stored.items())))
        base_items, base_bytes, _units = run.stored.get(STEP, (0, 0, 0))
        if base_items:
            print(f"  base resolution: {base_bytes / run.points:.2f} bytes per point, "
                  f"{run.points / base_items:.0f} points per item")
        keys = ("write_units", "items_written", "items_unchanged", "blocks_written", "errors")
        print("  turokd counters: " + (", ".join(f"{key} {run.counters[key]:,}" for key in keys if key in run.counters)
                                       or "none logged")
              + (f"; write units per 1,000 points {1000 * run.counters['write_units'] / run.points:.2f}"
                 if "write_units" in run.counters else ""))
    if carbon is not None:
        print(f"carbon-cache committed {carbon.delivered:,} points (its own metrics included)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", default="1000,10000", help="comma-separated metric counts, one run each")
    parser.add_argument("--slots", type=int, default=90, help="10 s slots per metric (90: one 15-minute block)")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--age-hours", type=float, default=13.0,
                        help="the first slot is this far back (past a 12-hour 1-minute block)")
    parser.add_argument("--close-delay", type=float, default=1.0, help="turokd's block_close_delay_seconds")
    parser.add_argument("--receivers", default="turok,carbon-cache")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per receiver and size")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--profile-turokd", metavar="FILE", help="py-spy turokd into FILE (raw folded stacks)")
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy's samples per second")
    parser.add_argument("--py-spy", default="py-spy", help="py-spy's path, for --profile-turokd")
    args = parser.parse_args(argv)
    receivers = args.receivers.split(",")
    print(f"Whole pipeline vs carbon-cache: {args.slots} closed 10 s slots per metric, {RETENTIONS}, "
          f"plaintext over {args.connections} TCP connection(s); {machine()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-pipeline-"))
    try:
        for metrics in (int(text) for text in args.metrics.split(",")):
            names, first, payloads = workload(metrics, args.slots, args.age_hours, args.connections)
            points = len(names) * args.slots
            run = carbon = None
            if "turok" in receivers:
                run = run_turok(workdir / f"turok-{metrics}", names, first, args.slots, payloads, args)
                print(f"  turok {metrics:,} metrics: pipeline {human(points / run.pipeline_cpu)} pts/CPU-s", flush=True)
            if "carbon-cache" in receivers:
                cache = CarbonCache(workdir / f"carbon-{metrics}", retentions=CARBON_RETENTIONS,
                                    settings=CARBON_SETTINGS)
                try:
                    time.sleep(0.5)
                    carbon = measure("carbon-cache", cache.process.pid, cache.port, payloads, points,
                                     cache.delivered, args.timeout)
                finally:
                    stop(cache.process)
                if not args.keep:
                    shutil.rmtree(workdir / f"carbon-{metrics}", ignore_errors=True)
            report(metrics, run, carbon, f"{points:,} points ({args.slots} per metric)")
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
