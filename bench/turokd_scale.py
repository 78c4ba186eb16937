"""Issue 13: 1, 2 and 4 turokd processes on the same queue(s), on live traffic.

    .venv/bin/python bench/turokd_scale.py [--turokds 1,2,4] [--metrics 3000] [--duration 150]
        [--block-slots 6] [--close-delay 30] [--partitions 4] [--open]

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

``--open``: memory with the blocks open, at the default block length (``block_slots`` 0: 432
slots of 10 s, 72 minutes) unless ``--block-slots`` says otherwise, where open blocks hold their
messages far longer than a run. Each turokd's RSS is read once before the traffic (idle), then
every ``--sample`` seconds from the time the first slot reached turokd (every metric then has an
open block); the metrics held are counted on a sample of the names (every k-th, at most 1,000:
the cache query walks every slot of every metric it is asked about), and the messages in flight
(received, held, not deleted: SQS's per-queue limit) from the queues' attributes. Once the last
slot is received, CPU is read and the processes are stopped with SIGTERM (the gateway first, then
every turokd at once): turokd writes what it holds at shutdown; its exit code, the open blocks it
says it wrote, its write-unit and item counters and every slot of a sample of the metrics (at most
5,000) read back from DynamoDB show the shutdown's writes complete.
"""
from __future__ import annotations

import argparse
import re
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
EXITS = {0: "clean", -15: "clean (SIGTERM)", -9: "KILLED"}  # twistd re-raises the signal it stopped on


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
    # --open: RSS before the traffic, RSS per sample once every metric is held, blocks written at
    # shutdown, the most messages in flight per queue, exit codes
    idle_rss: dict[str, int] = field(default_factory=dict)
    rss_samples: dict[str, list[int]] = field(default_factory=dict)
    shutdown_blocks: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    exit_codes: dict[str, Optional[int]] = field(default_factory=dict)
    shutdown_seconds: float = 0.0  # from SIGTERM until every turokd wrote what it held and exited

    @property
    def names(self) -> list[str]:
        return sorted(self.counters or self.held)

    @property
    def write_units(self) -> float:
        units = [c.get("write_units") for c in self.counters.values()]
        return sum(u for u in units if u is not None) if units and None not in units else float("nan")


def started(*targets) -> list[threading.Thread]:
    """A daemon thread started for each target (the traffic and the sampler)."""
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def first_slot(rounds: int, block_slots: int) -> int:
    """Where the traffic starts: with a base block and inside one 1-minute block, so each run
    stores as many items whatever N is (a run crossing a coarse block stores two of them); with
    long blocks (memory runs) at the next minute, so the 1-minute slots of every run are alike."""
    span, coarse_span = block_span(STEP, block_slots), block_span(60, block_slots)
    first = (int(time.time()) // span + 1) * span
    while first % coarse_span + rounds * STEP > coarse_span and first % coarse_span:
        first += span
    if first - time.time() > 600:
        first = (int(time.time()) // 60 + 1) * 60
    return first


def run_open(processes: TurokProcesses, count: int, names: list[str], args: argparse.Namespace, first: int,
             rounds: int) -> ScaleRun:
    """``--open``: sample RSS with every metric's block open, then stop and check what is stored."""
    assert processes.config is not None
    config = processes.config
    turokds = processes.turokds
    run = ScaleRun(count, len(names) * rounds, {}, 0.0, False, ignored=processes.ignored)
    span = block_span(STEP, args.block_slots)
    if first // span != (first + rounds * STEP - 1) // span:
        print(f"  note: the traffic crosses a {span} s block's end: blocks close during the run", flush=True)
    pids = processes.pids()
    time.sleep(3)
    run.idle_rss = {name: rss_bytes(pids[name]) for name in turokds}
    sample_every = max(1, len(names) // 1000)
    sample_names = names[::sample_every]
    held_from = first + STEP + config.window_grace_seconds + 5  # the first slot is in every metric's block
    stop_sampling = threading.Event()

    def send() -> None:
        for slot in range(rounds):
            stamp = first + slot * STEP
            time.sleep(max(0.0, stamp + 1 - time.time()))
            send_lines(slot_lines(names, slot, stamp, args.connections), port)

    def sample() -> None:
        while not stop_sampling.wait(args.sample):
            take_sample()

    def take_sample() -> None:
        now = time.time()
        try:
            for queue, (_visible, in_flight) in processes.metric_queue_counts().items():
                run.in_flight[queue] = max(run.in_flight.get(queue, 0), in_flight)
        except Exception:  # noqa: BLE001 - a sample missed, not a failed run
            pass
        if now < held_from:
            return
        for name in turokds:
            try:
                run.rss_samples.setdefault(name, []).append(rss_bytes(pids[name]))
                held = processes.held_metrics(name, sample_names, now - 3 * span, now + 60) * sample_every
                run.held[name] = max(run.held.get(name, 0), held)
            except (OSError, ValueError):
                pass

    port = config.plaintext_port
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    sender, sampler = started(send, sample)
    released = first + rounds * STEP + config.window_grace_seconds + 3
    deadline = t0 + args.timeout
    while time.monotonic() < deadline:  # until the last slot is sent and received (held, not deleted)
        time.sleep(1)
        if not sender.is_alive() and time.time() > released \
                and sum(visible for visible, _ in processes.metric_queue_counts().values()) == 0:
            run.finished = True
            break
    time.sleep(2)
    stop_sampling.set()
    sampler.join(120)
    take_sample()
    run.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    run.wall = time.monotonic() - t0
    for name in turokds:
        run.rss[name] = max(run.rss_samples.get(name, [0]))
    # SIGTERM: the gateway sends what it holds, each turokd writes every open block, then releases
    run.exit_codes = processes.stop_services(["gateway"], timeout=args.timeout)
    stopping = time.monotonic()
    run.exit_codes.update(processes.stop_together(turokds, args.timeout))
    run.shutdown_seconds = time.monotonic() - stopping
    run.exit_codes.update(processes.stop_services(["indexer"], timeout=args.timeout))
    for name in turokds:
        said = [re.search(r"wrote (\d+) open block", line) for line in processes.log_lines(name, "at shutdown")]
        run.shutdown_blocks[name] = sum(int(match.group(1)) for match in said if match)
    run.counters = {name: processes.counters(name) for name in turokds}
    # every slot of a sample of the metrics (every k-th, at most 5,000: reading back and scanning
    # hundreds of thousands of items from moto takes longer than the run), and the items written
    checked = max(1, len(names) // 5000)
    series = processes.fetch_series(names[::checked], STEP, first, first + rounds * STEP)
    run.verified = checked * sum(1 for index, name in list(enumerate(names))[::checked]
                                 for slot, value in enumerate(series.get(name, []))
                                 if value is not None and abs(value - float(value_text(index, slot))) < 1e-9)
    run.stored_units = int(sum(counters.get("items_written", 0) for counters in run.counters.values()))
    return run


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
        first = first_slot(rounds, args.block_slots)
        if args.open:
            return run_open(processes, count, names, args, first, rounds)
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
        t0 = time.monotonic()
        sender, sampler = started(send, sample)
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


def report_open(runs: list[ScaleRun]) -> None:
    """``--open``: memory per turokd with every metric's block open, and what the stop stored."""
    mib = 2 ** 20
    print("\n| turokd processes | turokd | idle RSS MiB | RSS MiB, samples once all held (min–max) | above idle MiB "
          "| metrics held (sampled) | open blocks written at shutdown | CPU s (traffic) | exit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        for name in run.names:
            samples = run.rss_samples.get(name, [0])
            print(f"| {run.turokds} | {name} | {run.idle_rss.get(name, 0) / mib:.1f} | {min(samples) / mib:.1f}–"
                  f"{max(samples) / mib:.1f} | {(run.rss.get(name, 0) - run.idle_rss.get(name, 0)) / mib:.1f} "
                  f"| {run.held.get(name, 0):,} | {run.shutdown_blocks.get(name, 0):,} | {run.cpu.get(name, 0):.1f} "
                  f"| {EXITS.get(run.exit_codes.get(name), run.exit_codes.get(name))} |")
    print("\n| turokd processes | points | read back (sampled) | write units (counters) | items written (counters) "
          "| largest RSS MiB | sum of RSS MiB | largest above idle MiB | largest RSS vs one | above idle vs one "
          "| most metrics held vs one | most in flight per queue | gateway / indexer / moto CPU s | wall s "
          "| shutdown s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    one = runs[0]

    def above(run: ScaleRun) -> int:
        return max(run.rss[name] - run.idle_rss.get(name, 0) for name in run.names)

    for run in runs:
        print(f"| {run.turokds} | {run.points:,} | {run.verified / run.points:.2%} | {run.write_units:,} "
              f"| {run.stored_units:,} | {max(run.rss.values()) / mib:.1f} | {sum(run.rss.values()) / mib:.1f} "
              f"| {above(run) / mib:.1f} | {max(run.rss.values()) / max(one.rss.values()):.2f}x "
              f"| {above(run) / max(above(one), 1):.2f}x "
              f"| {max(run.held.values(), default=0) / max(max(one.held.values(), default=0), 1):.2f}x "
              f"| {max(run.in_flight.values(), default=0):,} "
              f"| {run.cpu.get('gateway', 0):.1f} / {run.cpu.get('indexer', 0):.1f} / {run.cpu.get('moto', 0):.1f} "
              f"| {run.wall:.0f}{'' if run.finished else ' TIMED OUT'} | {run.shutdown_seconds:.0f} |")
    if one.turokds == 1:
        for run in runs[1:]:
            print(f"{run.turokds} turokd: target <= {1.25 / run.turokds:.3f}x one turokd's")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turokds", default="1,2,4", help="comma-separated turokd counts, one run each")
    parser.add_argument("--metrics", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of live traffic")
    parser.add_argument("--block-slots", type=int, default=None,
                        help="turokd's block_slots (default 6, so blocks close in the run; with --open 0: "
                             "the default length)")
    parser.add_argument("--open", action="store_true",
                        help="measure memory with the blocks open, then stop (module doc)")
    parser.add_argument("--close-delay", type=float, default=30.0,
                        help="turokd's block_close_delay_seconds (the default: live points reach turokd "
                             "step + window grace + a flush after their slot, so less makes them late)")
    parser.add_argument("--partitions", type=int, default=4, help="queue_partitions, where the config has it")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS / held-metrics samples")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.block_slots is None:
        args.block_slots = 0 if args.open else 6
    names = metric_names(args.metrics)
    counts = [int(text) for text in args.turokds.split(",")]
    blocks = f"{args.block_slots or 'default'}-slot blocks{' kept open' if args.open else ''}"
    print(f"turokd scale: {counts} turokd on live traffic, {args.metrics:,} metrics x one point every 10 s for "
          f"{args.duration:.0f} s, {blocks}, close delay {args.close_delay} s; {machine()}; "
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
    report_open(runs) if args.open else report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
