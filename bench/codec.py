"""The gateway's encoding step alone: release closed windows and encode them into SQS bodies.

For a few data shapes (100,000 windows by default, names like ``servers.web042.cpu.user``),
buffers the points in a real ``WindowBuffer``, then times ``release`` + ``encode_messages`` in
this process (CPU time, median of ``--repeat``) and reports, per point: CPU, body bytes, and what
SQS would bill for a billion points (every 64 KB of a request is one request, $0.40 a million).
Compares zlib levels, and with ``--ref REV`` the codec of another git revision (e.g. ``main``) on
the same data, run through its own release path as that revision's gateway would.

    .venv/bin/python bench/codec.py [--windows 100000] [--repeat 5] [--levels 1,6] [--ref main]
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import random
import subprocess
import sys
import time
from typing import Callable

from common import REPO, median  # (puts the checkout first on sys.path)

from turok_core.windows.buffer import WindowBuffer
from turok_core.wire import codec

T0 = 1_700_000_000 // 3600 * 3600
SQS_CHUNK = 65536
SQS_PRICE_PER_REQUEST = 0.40 / 1e6
HOST_METRICS = ("user", "system", "idle", "iowait", "nice", "irq", "softirq", "steal", "guest", "load")


def names(count: int) -> list[str]:
    return [f"servers.web{i // len(HOST_METRICS):04d}.cpu.{HOST_METRICS[i % len(HOST_METRICS)]}"
            for i in range(count)]


def shapes(windows: int) -> dict[str, Callable[[], tuple[list[str], list[float], list[int]]]]:
    """Data shapes: each returns the parallel lists of points to buffer."""
    rng = random.Random(42)
    base = names(windows)

    def one_decimal():  # as bench/plaintext_ingest.py sends: "537.3"
        return base, [float(f"{(i * 7) % 1000}.{i % 10}") for i in range(windows)], [T0] * windows

    def integral():  # counters, bytes, gauges of whole numbers
        return base, [float(rng.randrange(100_000)) for _ in range(windows)], [T0] * windows

    def random_floats():  # full-precision floats: the worst case for size
        return base, [rng.uniform(0, 100) for _ in range(windows)], [T0] * windows

    def ten_per_window():  # a collector reporting every second into 10 s windows
        count = windows // 10
        return (base[:count] * 10, [float(rng.randrange(1000)) / 10 for _ in range(count * 10)],
                [T0 + k for k in range(10) for _ in range(count)])

    return {"1 pt/window, 1 decimal": one_decimal, "1 pt/window, integral": integral,
            "1 pt/window, random float": random_floats, "10 pts/window, 1 decimal": ten_per_window}


def ref_codec(rev: str):
    """The codec module of git revision ``rev``, loaded beside this checkout's modules."""
    path = "turok_core/wire/codec.py"
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True)
    if shown.returncode:  # a revision before the per-stage layout
        path = "turok_core/codec.py"
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True, text=True)
    spec = importlib.util.spec_from_loader("turok_core._codec_ref", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "turok_core"
    exec(compile(shown.stdout, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def measure(points, encode: Callable, as_list: bool, repeat: int) -> tuple[float, int, int]:
    """(median CPU seconds of release+encode, body bytes, SQS 64 KB chunks) for the points."""
    cpus, sizes, chunks = [], 0, 0
    for _ in range(repeat):
        buffer = WindowBuffer(lambda name: (10, "average"), grace_seconds=0)
        buffer.add_points(*points)
        start = time.process_time()
        released = buffer.release(T0 + 3600)
        if as_list:  # the previous codec took a list of messages
            released = list(released)
        bodies = encode(released)
        cpus.append(time.process_time() - start)
        sizes = sum(map(len, bodies))
        chunks = sum(math.ceil(len(body) / SQS_CHUNK) for body in bodies)
    return median(cpus), sizes, chunks


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--levels", default="1,6")
    parser.add_argument("--limit", type=int, default=262144, help="sqs_max_message_bytes")
    parser.add_argument("--ref", help="also measure the codec of this git revision (e.g. main)")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]
    encoders: list[tuple[str, Callable, bool]] = []
    if args.ref:
        old = ref_codec(args.ref)
        encoders.append((f"{args.ref} (v{old.ENVELOPE_VERSION}, level 6)",
                         lambda ms: old.encode_messages(ms, args.limit), True))
    for level in levels:
        encoders.append((f"v{codec.ENVELOPE_VERSION}, level {level}",
                         lambda ms, level=level: codec.encode_messages(ms, args.limit, level), False))
    print(f"{args.windows:,} windows per batch, bodies ≤ {args.limit:,} bytes, median of {args.repeat} runs")
    print("| data | codec | CPU µs/point | bytes/point | bodies' 64 KB chunks | SQS $ per 10⁹ points |")
    print("|---|---|---|---|---|---|")
    for shape, make in shapes(args.windows).items():
        points = make()
        count = len(points[0])
        for label, encode, as_list in encoders:
            cpu, size, chunks = measure(points, encode, as_list, args.repeat)
            dollars = chunks / count * 1e9 * SQS_PRICE_PER_REQUEST
            print(f"| {shape} | {label} | {cpu / count * 1e6:.2f} | {size / count:.2f} | {chunks} | {dollars:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
