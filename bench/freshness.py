"""Freshness: seconds from sending a point to seeing it in graphite-web's render API, at default settings.

    .venv/bin/python bench/freshness.py [--samples 12]

Starts the whole `make run` stack (moto server, gateway, turokd, indexer, graphite-web) on free
loopback ports with every other setting at its default, then sends one point at a time, each
for a new metric and stamped "now", over Carbon plaintext TCP, and polls `/render` every 0.1 s
until it shows. A new name also waits for the indexer (turokd announces it when the window
reaches it, and the finder's index copy is revalidated every `index_refresh_seconds`); a second
point of an already known name shows the data path alone: the finder asks the gateway for its
open windows and turokd for its open blocks (`cache_hosts`), so it shows at once.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, machine  # noqa: E402
from turok_core.dev.stack import DevStack  # noqa: E402
from turok_core.model.config import TurokConfig  # noqa: E402

POLL = 0.1
TIMEOUT = 120.0


def render(stack: DevStack, target: str) -> dict[int, float]:
    query = urllib.parse.urlencode({"target": target, "from": "-10min", "format": "json"})
    with urllib.request.urlopen(f"{stack.graphite_url}/render?{query}", timeout=30) as response:
        series = json.loads(response.read())
    return {t: v for s in series for v, t in s["datapoints"] if v is not None}


def seconds_until_visible(stack: DevStack, name: str, value: float) -> float:
    """Send ``name value now`` and wait until the render API shows it; seconds it took."""
    sent = time.time()
    with socket.create_connection(("127.0.0.1", stack.config.plaintext_port), timeout=10) as sock:
        sock.sendall(f"{name} {value} {int(sent)}\n".encode())
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if value in render(stack, name).values():
            return time.time() - sent
        time.sleep(POLL)
    raise RuntimeError(f"{name} not visible after {TIMEOUT} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12)
    args = parser.parse_args(argv)
    config = TurokConfig(table_prefix=f"fresh{uuid.uuid4().hex[:6]}", plaintext_port=free_port(),
                         plaintext_udp_port=free_port(), pickle_port=free_port(), statsd_port=free_port(),
                         local_aws_port=free_port(), graphite_port=free_port(), cache_port=free_port(),
                         gateway_cache_port=free_port())
    with tempfile.TemporaryDirectory(prefix="turok-fresh-") as run_dir:
        stack = DevStack(config, Path(run_dir))
        stack.start(timeout=120)
        try:
            new_names, known_names = [], []
            for i in range(args.samples):
                name = f"bench.fresh.m{i}"
                new_names.append(seconds_until_visible(stack, name, 1000.0 + i))
                time.sleep(i % 7)  # spread the sends over the 10 s slot
                known_names.append(seconds_until_visible(stack, name, 2000.0 + i))
        finally:
            stack.stop()
    print(f"\nFreshness at default settings (10 s step, window_grace_seconds 10, flush 1 s, index refresh 5 s); "
          f"{args.samples} samples each; {machine()}")
    print(f"{'point of':<28}{'median s':>10}{'p95 s':>10}{'max s':>10}")
    for label, samples in (("a new metric name", new_names), ("an already known name", known_names)):
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        print(f"{label:<28}{statistics.median(samples):>10.1f}{p95:>10.1f}{max(samples):>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
