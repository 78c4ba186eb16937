"""Benchmark 4 of issue 6: the gateway's resident memory per active metric.

Starts a real ``twistd -n turok-gateway`` from the checkout (against its own moto server, as
``plaintext_ingest.py`` does) with ``window_grace_seconds`` long enough that no window closes
during the measurement, sends one point (or ``--points-per-metric``) for each of M metrics
(default 100,000) stamped now, waits until the gateway's CPU settles, and reports
(RSS after − RSS before) ÷ M. Target (issue 6): under 300 bytes per metric.

    .venv/bin/python bench/memory.py [--metrics 100000] [--points-per-metric 1] [--repeat 3]
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
from plaintext_ingest import TurokGateway, send_all

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
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    print(f"gateway memory: {args.metrics:,} metrics in open windows, {args.points_per_metric} point(s) each, "
          f"{args.repeat} run(s); {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-memory-"))
    turok = TurokGateway(workdir)
    per_metric: list[float] = []
    try:
        turok.start_moto()
        for run in range(args.repeat):
            # no window may close (nor self-metrics be added) while we measure
            pid = turok.start(run, {"TUROK_WINDOW_GRACE_SECONDS": "3600"})
            try:
                data = payload(args.metrics, args.points_per_metric)
                before = rss_bytes(pid)
                t0 = time.monotonic()
                send_all([data], turok.port, args.timeout)
                cpu, _, finished = wait_cpu_settled(pid, t0, lambda: True, args.timeout)
                after = rss_bytes(pid)
                value = (after - before) / args.metrics
                per_metric.append(value)
                print(f"  run {run + 1}: RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB, "
                      f"{value:.1f} bytes per metric{'' if finished else ' (CPU did not settle)'}", flush=True)
            finally:
                turok.stop()
    finally:
        turok.close()
        shutil.rmtree(workdir, ignore_errors=True)
    result = median(per_metric)
    verdict = "meets" if result < TARGET_BYTES else "MISSES"
    print("\n| receiver | metrics | bytes per active metric (median) | target |")
    print("|---|---|---|---|")
    print(f"| turok-gateway | {args.metrics:,} | {result:.1f} | < {TARGET_BYTES} ({verdict} it) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
