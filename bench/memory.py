"""Benchmark 4 of issue 6: the gateway's resident memory per active metric, beside carbon-cache's.

Starts a real ``twistd -n turok-gateway`` from the checkout (against its own moto server, as
``plaintext_ingest.py`` does) with ``window_grace_seconds`` long enough that no window closes
during the measurement, sends one point (or ``--points-per-metric``) for each of M metrics
(default 100,000) stamped now, waits until the gateway's CPU settles, and reports
(RSS after − RSS before) ÷ M. Target (issue 6): under 300 bytes per metric.

The anchor is carbon-cache 1.1.10 holding the same points in its cache: with
``MAX_UPDATES_PER_SECOND = 1`` its writer stores one metric a second, so while it is measured
(a few seconds) nearly every metric waits in the cache, as the points of a metric wait in the
gateway's window. The few metrics it wrote by then are counted as cached (under 0.1%).

    .venv/bin/python bench/memory.py [--metrics 100000] [--points-per-metric 1] [--repeat 3]
        [--receivers turok,carbon-cache]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from common import machine, median, rss_bytes, wait_cpu_settled
from plaintext_ingest import CarbonCache, TurokGateway, send_all, stop

TARGET_BYTES = 300


def payload(metrics: int, per_metric: int) -> bytes:
    """``per_metric`` points for each of ``metrics`` names, all in the current 10 s slot."""
    now = int(time.time()) // 10 * 10
    lines = [f"hosts.h{index // 100:05d}.app.metric{index % 100:02d} {k}.5 {now}\n"
             for k in range(per_metric) for index in range(metrics)]
    return "".join(lines).encode()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=100_000)
    parser.add_argument("--points-per-metric", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="--repeat 1")
    parser.add_argument("--receivers", default="turok,carbon-cache")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    print(f"memory: {args.metrics:,} metrics in open windows, {args.points_per_metric} point(s) each, "
          f"{args.repeat} run(s); {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-memory-"))
    receivers = args.receivers.split(",")
    results: dict[str, list[float]] = {receiver: [] for receiver in receivers}
    turok = TurokGateway(workdir)
    try:
        if "turok" in receivers:
            turok.start_moto()
        for run in range(args.repeat):
            data = payload(args.metrics, args.points_per_metric)
            for receiver in receivers:
                if receiver == "turok":
                    # no window may close (nor self-metrics be added) while we measure
                    pid, port = turok.start(run, {"TUROK_WINDOW_GRACE_SECONDS": "3600"}), turok.port
                    close = turok.stop
                else:
                    cache = CarbonCache(workdir / f"run{run}", max_updates_per_second="1")
                    pid, port = cache.process.pid, cache.port
                    close = lambda: stop(cache.process)  # noqa: E731
                    time.sleep(2.0)  # its start-up (and first self-metrics) before the baseline
                try:
                    value, line = measure(pid, port, data, args.metrics, args.timeout)
                finally:
                    close()
                results[receiver].append(value)
                print(f"  run {run + 1} {receiver}: {line}", flush=True)
    finally:
        turok.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| receiver | metrics | bytes per active metric (median) | runs | target |")
    print("|---|---|---|---|---|")
    for receiver, values in results.items():
        result = median(values)
        runs = ", ".join(f"{value:.1f}" for value in values)
        verdict = 'meets' if result < TARGET_BYTES else 'MISSES'
        target = f"< {TARGET_BYTES} ({verdict} it)" if receiver == "turok" else "anchor"
        print(f"| {receiver} | {args.metrics:,} | {result:.1f} | {runs} | {target} |")
    if len(results) == 2 and all(results.values()):
        ratio = median(results['carbon-cache']) / median(results['turok'])
        print(f"carbon-cache / Turok: {ratio:.2f}x the memory per metric")
    return 0


def measure(pid: int, port: int, data: bytes, metrics: int, timeout: float) -> tuple[float, str]:
    """(bytes per metric, a line for the log): RSS growth of ``pid`` from sending ``data``."""
    before = rss_bytes(pid)
    t0 = time.monotonic()
    send_all([data], port, timeout)
    _cpu, _, finished = wait_cpu_settled(pid, t0, lambda: True, timeout)
    after = rss_bytes(pid)
    value = (after - before) / metrics
    return value, (f"RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB, {value:.1f} bytes per metric"
                   f"{'' if finished else ' (CPU did not settle)'}")


if __name__ == "__main__":
    sys.exit(main())
