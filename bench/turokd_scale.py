"""Issue 13: 1, 2 and 4 turokd processes on the same queue(s), on live traffic.

    .venv/bin/python bench/turokd_scale.py [--turokds 1,2,4] [--metrics 3000] [--duration 150]
        [--block-slots 6] [--close-delay 30] [--partitions 4]

For each count N, on fresh queues and tables: the whole Turok pipeline (``bench/turok_processes.py``:
real gateway, N real ``twistd turokd`` and the indexer on a moto server), ``block_slots`` shortened
so blocks close within the run, and live traffic: every 10 s, one point of each metric stamped
now, for ``--duration`` seconds, over plaintext TCP, once the turokd processes have shared the
partitions out (the lease table shows each its fair share): the steady state, where no partition
moves while the traffic runs (a turokd joining or leaving is the leases e2e test's matter).
``--partitions`` is passed as ``queue_partitions``.

Measured until every message is deleted (its data stored) and the CPU stopped rising: per turokd
its CPU (and CPU per point of all the points), its largest RSS and the most metrics it held slots
of at once (sampled every ``--sample`` seconds, RSS from /proc, held metrics over its cache query
port: an open block per metric held); for all: write units per 1,000 points (the turokd
processes' own ``write_units`` counters, logged when they stop, and what writing each stored item
once would cost, from a scan), and the ratios against one turokd.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from common import cpu_seconds, machine, rss_bytes
from turok_processes import TurokProcesses, metric_names, send_lines, slot_lines, value_text, wait_idle

from turok_core.storage.block_layout import block_span

STEP = 10


@dataclass
class ScaleRun:
    turokds: int
    points: int
    cpu: dict[str, float]
    wall: float
    finished: bool
    verified: int = 0
    rss: dict[str, int] = field(default_factory=dict)  # largest seen
    held: dict[str, int] = field(default_factory=dict)  # most metrics held at once
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    stored_units: int = 0
    ignored: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return sorted(self.counters or self.held)

    @property
    def write_units(self) -> float:
        units = [c.get("write_units") for c in self.counters.values()]
        return sum(u for u in units if u is not None) if units and None not in units else float("nan")


def run_count(count: int, workdir: Path, names: list[str], args: argparse.Namespace) -> ScaleRun:
    settings = {"block_slots": args.block_slots, "block_close_delay_seconds": args.close_delay,
                "queue_partitions": args.partitions}
    processes = TurokProcesses(workdir, settings)
    try:
        processes.start(turokds=count)
        assert processes.config is not None
        processes.wait_leases_settled()  # a steady state: no partition moves while the traffic runs
        port = processes.config.plaintext_port
        rounds = max(1, int(args.duration // STEP))
        # the traffic begins with a base block and lies inside one 1-minute block, so each run
        # stores as many items whatever N is (a run crossing a coarse block stores two of them)
        span, coarse_span = block_span(STEP, args.block_slots), block_span(60, args.block_slots)
        first = (int(time.time()) // span + 1) * span
        while first % coarse_span + rounds * STEP > coarse_span and first % coarse_span:
            first += span
        if first - time.time() > 600:  # long blocks (memory runs): start at the next slot instead
            first = (int(time.time()) // STEP + 1) * STEP
        stop_sampling = threading.Event()
        run = ScaleRun(count, len(names) * rounds, {}, 0.0, False, ignored=processes.ignored)
        turokds = processes.turokds

        def send() -> None:
            for slot in range(rounds):
                stamp = first + slot * STEP
                time.sleep(max(0.0, stamp + 1 - time.time()))  # a collector reporting just after the slot began
                send_lines(slot_lines(names, slot, stamp, args.connections), port)

        def sample() -> None:
            while not stop_sampling.wait(args.sample):
                now = time.time()
                for name in turokds:
                    try:
                        run.rss[name] = max(run.rss.get(name, 0), rss_bytes(processes.processes[name].pid))
                        held = processes.held_metrics(name, names, now - 3600, now + 60)
                        run.held[name] = max(run.held.get(name, 0), held)
                    except (OSError, ValueError):
                        pass

        pids = processes.pids()
        services = {name: pid for name, pid in pids.items() if name != "moto"}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sender = threading.Thread(target=send, daemon=True)
        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.monotonic()
        sender.start()
        sampler.start()
        # the gateway holds a live window for its step and grace before it sends it: until then
        # the queues can be empty with points still to come
        released = first + rounds * STEP + processes.config.window_grace_seconds + 3

        def done() -> bool:
            return not sender.is_alive() and time.time() > released and processes.backlog() == 0

        cpu, end, run.finished = wait_idle(services, done, args.timeout)
        stop_sampling.set()
        sampler.join(60)
        cpu["moto"] = cpu_seconds(pids["moto"])
        run.cpu = {name: cpu[name] - before[name] for name in pids}
        run.wall = end - t0
        series = processes.fetch_series(names, STEP, first, first + rounds * STEP)
        run.verified = sum(1 for index, name in enumerate(names) for slot, value in enumerate(series.get(name, []))
                           if value is not None and abs(value - float(value_text(index, slot))) < 1e-9)
        run.stored_units = sum(units for _i, _b, units in processes.stored().values())
        processes.stop_services()
        run.counters = {name: processes.counters(name) for name in turokds}
        return run
    finally:
        processes.close()


def report(runs: list[ScaleRun]) -> None:
    print("\n| turokd processes | turokd | CPU s | share | CPU µs per point | max RSS MiB | most metrics held |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        total = sum(run.cpu[name] for name in run.names)
        for name in run.names:
            print(f"| {run.turokds} | {name} | {run.cpu[name]:.1f} | {run.cpu[name] / total:.0%} "
                  f"| {1e6 * run.cpu[name] / run.points:.0f} | {run.rss.get(name, 0) / 2**20:.1f} "
                  f"| {run.held.get(name, 0):,} |")
    print("\n| turokd processes | points | read back | write units (counters) | per 1,000 points | vs one turokd "
          "| units writing each stored item once | turokd CPU s (sum) | vs one turokd | gateway / indexer / moto CPU s "
          "| wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    one = runs[0]
    one_cpu = sum(one.cpu[name] for name in one.names)
    for run in runs:
        total = sum(run.cpu[name] for name in run.names)
        per_k = 1000 * run.write_units / run.points
        print(f"| {run.turokds} | {run.points:,} | {run.verified / run.points:.2%} | {run.write_units:,} | {per_k:.2f} "
              f"| {run.write_units / one.write_units * one.points / run.points:.2f}x | {run.stored_units:,} "
              f"| {total:.1f} | {total / one_cpu * one.points / run.points:.2f}x "
              f"| {run.cpu.get('gateway', 0):.1f} / {run.cpu.get('indexer', 0):.1f} / {run.cpu['moto']:.1f} "
              f"| {run.wall:.0f}{'' if run.finished else ' TIMED OUT'} |")
    if one.turokds == 1 and one.rss:
        base_rss, base_held = max(one.rss.values()), max(one.held.values(), default=0)
        for run in runs[1:]:
            print(f"{run.turokds} turokd: largest RSS {max(run.rss.values()) / base_rss:.2f}x and most metrics held "
                  f"{max(run.held.values(), default=0) / max(base_held, 1):.2f}x one turokd's "
                  f"(target <= {1.25 / run.turokds:.2f}x)")
    if runs[0].ignored:
        print(f"not in this checkout's configuration, so not set: {', '.join(runs[0].ignored)}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turokds", default="1,2,4", help="comma-separated turokd counts, one run each")
    parser.add_argument("--metrics", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of live traffic")
    parser.add_argument("--block-slots", type=int, default=6, help="turokd's block_slots (blocks close in the run)")
    parser.add_argument("--close-delay", type=float, default=30.0,
                        help="turokd's block_close_delay_seconds (the default: live points reach turokd "
                             "step + window grace + a flush after their slot, so less makes them late)")
    parser.add_argument("--partitions", type=int, default=4, help="queue_partitions, where the config has it")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS / held-metrics samples")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    names = metric_names(args.metrics)
    counts = [int(text) for text in args.turokds.split(",")]
    print(f"turokd scale: {counts} turokd on live traffic, {args.metrics:,} metrics x one point every 10 s for "
          f"{args.duration:.0f} s, {args.block_slots}-slot blocks, close delay {args.close_delay} s; {machine()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-scale-"))
    runs: list[ScaleRun] = []
    try:
        for count in counts:
            runs.append(run_count(count, workdir / f"n{count}", names, args))
            run = runs[-1]
            print(f"  {count} turokd: write units {run.write_units:,}, turokd CPU "
                  f"{sum(run.cpu[name] for name in run.names):.1f} s{'' if run.finished else ' (TIMED OUT)'}",
                  flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
