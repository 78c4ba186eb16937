"""Issue 13: late data, the same points at once and slot by slot into blocks that have closed.

    .venv/bin/python bench/late_data.py [--metrics 3000] [--slots 90] [--pause 1.5]
        [--close-delay 1] [--age-hours 13] [--connections 2]

The same plaintext lines as ``bench/pipeline.py`` (``--slots`` 10 s slots per metric, all in the
past: ``--age-hours`` back, so their 10 s and 12-hour 1-minute blocks have closed) go through the whole Turok pipeline
(``bench/turok_processes.py``: real gateway, turokd and indexer on a moto server) twice, each
time on fresh queues and tables:

* **at once**: every slot of every metric in one burst;
* **slot by slot**: slot 0 of every metric, then ``--pause`` seconds (longer than turokd's
  ``block_close_delay_seconds``, so each batch finds its blocks already written), then slot 1, …
  as a gateway's spool draining after an SQS outage or a relay's replay looks to turokd.

Each is measured until the queues are empty (every message deleted: its data is stored) and the
processes' CPU stopped rising. Prints per mode: turokd's write units and items written (its own
counters, logged when it stops), the units writing each stored item once would cost (from a scan
of the day tables), turokd's CPU and points per CPU-second, and the ratios slot by slot / at once.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common import cpu_seconds, human, machine
from turok_processes import TurokProcesses, metric_names, send_lines, slot_lines, value_text, wait_idle

STEP = 10


@dataclass
class LateRun:
    mode: str
    points: int
    cpu: dict[str, float]
    wall: float
    finished: bool
    verified: int
    stored_units: int  # writing each stored item once
    stored_items: int
    counters: dict[str, float]

    @property
    def write_units(self) -> float:
        return self.counters.get("write_units", float("nan"))


def run_mode(mode: str, workdir: Path, names: list[str], first: int, args: argparse.Namespace) -> LateRun:
    processes = TurokProcesses(workdir, {"block_close_delay_seconds": args.close_delay})
    try:
        processes.start()
        assert processes.config is not None
        port = processes.config.plaintext_port
        slots = [slot_lines(names, slot, first + slot * STEP, args.connections) for slot in range(args.slots)]

        def send() -> None:
            if mode == "at once":
                send_lines([b"".join(parts[c] for parts in slots) for c in range(args.connections)], port)
                return
            for parts in slots:
                started = time.monotonic()
                send_lines(parts, port)
                time.sleep(max(0.0, args.pause - (time.monotonic() - started)))

        pids = processes.pids()
        services = {name: pid for name, pid in pids.items() if name != "moto"}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sender = threading.Thread(target=send, daemon=True)
        t0 = time.monotonic()
        sender.start()
        cpu, end, finished = wait_idle(services, lambda: not sender.is_alive() and processes.backlog() == 0,
                                       args.timeout)
        cpu["moto"] = cpu_seconds(pids["moto"])
        series = processes.fetch_series(names, STEP, first, first + args.slots * STEP)
        verified = sum(1 for index, name in enumerate(names) for slot, value in enumerate(series.get(name, []))
                       if value is not None and abs(value - float(value_text(index, slot))) < 1e-9)
        stored = processes.stored()
        processes.stop_services()
        return LateRun(mode, len(names) * args.slots, {name: cpu[name] - before[name] for name in pids},
                       end - t0, finished, verified, sum(units for _i, _b, units in stored.values()),
                       sum(items for items, _b, _u in stored.values()), processes.counters("turokd-0"))
    finally:
        processes.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=3000)
    parser.add_argument("--slots", type=int, default=90)
    parser.add_argument("--pause", type=float, default=1.5, help="seconds between two slots (slot by slot)")
    parser.add_argument("--close-delay", type=float, default=1.0, help="turokd's block_close_delay_seconds")
    parser.add_argument("--age-hours", type=float, default=13.0)  # past a 12-hour 1-minute block
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.pause <= args.close_delay:
        parser.error("--pause must be longer than --close-delay, or the blocks are still open")
    names = metric_names(args.metrics)
    first = int(time.time() - args.age_hours * 3600) // 3600 * 3600
    print(f"Late data: {args.metrics:,} metrics x {args.slots} closed 10 s slots, at once and slot by slot "
          f"{args.pause} s apart (close delay {args.close_delay} s); {machine()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-late-"))
    runs: list[LateRun] = []
    try:
        for number, mode in enumerate(("at once", "slot by slot")):
            runs.append(run_mode(mode, workdir / f"run{number}", names, first, args))
            run = runs[-1]
            print(f"  {mode}: turokd {run.cpu['turokd-0']:.1f} s CPU, write units {run.write_units:,}"
                  f"{'' if run.finished else ' (TIMED OUT)'}", flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n| mode | points | turokd write units (its counter) | items written | units to write each stored item "
          "once | turokd CPU s | turokd pts/CPU-s | pipeline CPU s (moto apart) | wall s | read back |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        turokd = run.cpu["turokd-0"]
        pipeline = sum(cpu for name, cpu in run.cpu.items() if name != "moto")
        items = run.counters.get("items_written", float("nan"))
        print(f"| {run.mode} | {run.points:,} | {run.write_units:,} | {items:,} | {run.stored_units:,} "
              f"| {turokd:.1f} | {human(run.points / turokd)} | {pipeline:.1f} ({run.cpu['moto']:.1f}) "
              f"| {run.wall:.0f}{'' if run.finished else ' TIMED OUT'} | {run.verified / run.points:.2%} |")
    at_once, late = runs
    print(f"slot by slot / at once: {late.write_units / at_once.write_units:.2f}x write units (target <= 1.25x), "
          f"{late.cpu['turokd-0'] / at_once.cpu['turokd-0']:.2f}x turokd CPU; "
          f"late turokd {human(late.points / late.cpu['turokd-0'])} pts/CPU-s (target >= 100k)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
