"""turokd's CPU per point: envelope bodies through ``BlockWriter`` into a block store, in process.

    .venv/bin/python bench/turokd_cpu.py [--metrics 3000] [--slots 90] [--store memory|moto|both]
                                         [--scenario once|late|live|both] [--lease before|after]
                                         [--records on|off]
                                         [--profile 20]

Issue 13's stream: ``--metrics`` metrics × ``--slots`` 10 s slots under the default
``10s:1d,1min:30d,1h:2y`` (average, xFilesFactor 0.5), one gateway flush per slot encoded as the
gateway does (columnar v2 bodies, ≤ 256 KB) before the clock starts, then fed to turokd's core in
SQS batches of 10 on a simulated clock:

- ``once``: the slots of closed 15-minute blocks arrive together (a tick after them writes every
  block, then the rollups);
- ``late``: the same slots arrive one by one, 1.5 s apart, into blocks that closed already (a
  spool draining after an SQS outage), with a tick after each slot.
- ``live``: steady state at default settings: each slot's flush arrives ``LIVE_LAG`` seconds after
  the slot ends, as a gateway sends it, with a tick after it; blocks close on the clock as time
  passes (``--slots 1296``: three 10 s blocks of the default 432 slots).

The writer owns the metrics' partition since before the data (``owned_since``; ``--lease after``:
since after it, as for a replay of history: blocks the day tables' records of block starts prove
absent are put whole, as turokd does; ``--records off``: every block is merged). Reported per store: CPU
seconds of this process (boto3's threads included; the moto server's CPU is its own and reported
apart), points per CPU-second, boto3 calls and write units per 1,000 points. ``--profile N``
prints the N costliest functions (cProfile, main thread).
"""
from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import VENV_BIN, cpu_seconds, free_port, machine, stop, wait_port  # noqa: E402
from bench.cost import Billing, CountingClient  # noqa: E402
from turok_core.model.config import TurokConfig  # noqa: E402
from turok_core.model.message import TurokMessage  # noqa: E402
from turok_core.model.schemas import load_schemas  # noqa: E402
from turok_core.runtime.aws import make_client  # noqa: E402
from turok_core.storage.memory import MemoryBlockStore  # noqa: E402
from turok_core.storage.tables import BlockStore, WriteStats  # noqa: E402
from turok_core.turokd.block_writer import BlockWriter  # noqa: E402
from turok_core.turokd.start_snapshots import StartSnapshots  # noqa: E402
from turok_core.wire.codec import encode_messages  # noqa: E402
from turok_core.wire.queues import SQS_BATCH_ENTRIES, ReceivedMessage  # noqa: E402

STEP = 10
START = 1_795_478_400  # a UTC midnight (2026-11-24): the data's first slot
SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d,1min:30d,1h:2y\n"
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0.5\naggregationMethod = average\n"
LATE_GAP = 1.5  # seconds between slots in the late scenario
LIVE_LAG = 3.0  # seconds from a slot's end to its flush reaching turokd in the live scenario


def moto_server() -> Path:
    """The checkout's venv's moto_server, else the one beside this interpreter."""
    path = VENV_BIN / "moto_server"
    return path if path.exists() else Path(sys.executable).parent / "moto_server"


def flushes(metrics: int, slots: int) -> list[list[str]]:
    """One gateway flush per slot: its bodies, values as a mixed workload (counters, gauges, doubles)."""
    names = [f"bench.cpu.host{m // 100:03d}.metric{m % 100:02d}" for m in range(metrics)]
    result = []
    for s in range(slots):
        slot = START + s * STEP
        messages = [TurokMessage(name, slot, [float(m * 7 + s) if m % 2 else round(m * 0.37 + s * 0.01, 2)],
                                 STEP, "average") for m, name in enumerate(names)]
        result.append(encode_messages(messages, 262144))
    return result


def batches(bodies: list[str], tag: str) -> list[list[ReceivedMessage]]:
    received = [ReceivedMessage(body, f"{tag}.{i}", f"{tag}.m{i}", 1) for i, body in enumerate(bodies)]
    return [received[i:i + SQS_BATCH_ENTRIES] for i in range(0, len(received), SQS_BATCH_ENTRIES)]


def make_writer(store, config: TurokConfig, schemas, now: list[float], lease: str = "before",
                records: bool = True) -> BlockWriter:
    kwargs = {}
    if "owned_since" in inspect.signature(BlockWriter).parameters:
        since = float(START - 86400) if lease == "before" else now[0]  # after: the data is older than the lease
        kwargs["owned_since"] = lambda metric: since
        if records and "unwritten" in inspect.signature(BlockWriter).parameters:
            # as turokd wires it: the day tables' records of block starts, read after the lease
            kwargs["unwritten"] = StartSnapshots(store, lambda metric: since)
    return BlockWriter(store, config, schemas, clock=lambda: now[0], **kwargs)


def run(scenario: str, store, config: TurokConfig, schemas, data: list[list[str]],
        profile: int, lease: str = "before", records: bool = True) -> tuple[float, WriteStats, int]:
    """Feed the flushes; return (CPU seconds of this process, write stats, points)."""
    span_end = START + len(data) * STEP
    now = [float(span_end - span_end % 900 + 900 + 3600)]  # every block of the data closed an hour ago
    if scenario == "live":
        now = [float(START)]  # the clock follows the data
    writer = make_writer(store, config, schemas, now, lease, records)
    stats = WriteStats()
    points = 0  # counted from the decoded batches below
    profiler = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    if profiler:
        profiler.enable()
    if scenario == "once":
        for n, bodies in enumerate(data):
            for batch in batches(bodies, f"o{n}"):
                points += writer.hold(batch).slot_count
        stats.add(writer.close().stats)
    elif scenario == "live":
        for n, bodies in enumerate(data):
            now[0] = START + (n + 1) * STEP + LIVE_LAG
            for batch in batches(bodies, f"v{n}"):
                points += writer.hold(batch).slot_count
            stats.add(writer.close().stats)
    else:
        for n, bodies in enumerate(data):
            for batch in batches(bodies, f"l{n}"):
                points += writer.hold(batch).slot_count
            now[0] += LATE_GAP
            stats.add(writer.close().stats)
    now[0] += 3600
    stats.add(writer.close().stats)  # whatever waits (coalesced late merges)
    stats.add(writer.close_all().stats)  # the coarse blocks still open (the hour's spans days)
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu0
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(profile)
        print(out.getvalue())
    return cpu, stats, points


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=3000)
    parser.add_argument("--slots", type=int, default=90)
    parser.add_argument("--store", choices=("memory", "moto", "both"), default="both")
    parser.add_argument("--scenario", choices=("once", "late", "live", "both"), default="both",
                        help="both: once and late")
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions")
    parser.add_argument("--records", choices=("on", "off"), default="on",
                        help="trust the day tables' records of block starts (turokd does), or not")
    parser.add_argument("--lease", choices=("before", "after"), default="before",
                        help="the partition's lease predates the data (fresh puts), or not (a replay of "
                             "history: every block merged)")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    data = flushes(args.metrics, args.slots)
    scenarios = ("once", "late") if args.scenario == "both" else (args.scenario,)
    stores = ("memory", "moto") if args.store == "both" else (args.store,)
    print(f"# turokd_cpu: {args.metrics} metrics x {args.slots} slots, {sum(map(len, data))} bodies, "
          f"lease {args.lease} the data, records {args.records}; {machine()}")
    print("| store | scenario | points | CPU s | points/CPU-s | boto3 calls /1k pts | write units /1k pts "
          "| moto CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    moto = None
    try:
        with tempfile.TemporaryDirectory(prefix="turok-cpu-") as workdir:
            for kind in stores:
                port = 0
                if kind == "moto" and moto is None:
                    port = free_port()
                    moto = subprocess.Popen([str(moto_server()), "-H", "127.0.0.1", "-p", str(port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wait_port(port, 30, moto)
                for scenario in scenarios:
                    tag = uuid.uuid4().hex[:6]
                    schema_file, aggregation_file = Path(workdir, "s.conf"), Path(workdir, "a.conf")
                    schema_file.write_text(SCHEMAS)
                    aggregation_file.write_text(AGGREGATION)
                    config = TurokConfig(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_region="us-east-1",
                                         table_prefix=f"cpu{tag}", schemas_file=str(schema_file),
                                         aggregation_file=str(aggregation_file), self_metrics_interval_seconds=0)
                    schemas = load_schemas(config)
                    billing: Counter = Billing()
                    if kind == "memory":
                        store = MemoryBlockStore(config)
                    else:
                        store = BlockStore(CountingClient(make_client("dynamodb", config), billing), config)
                    moto_cpu0 = cpu_seconds(moto.pid) if moto is not None else 0.0
                    cpu, stats, points = run(scenario, store, config, schemas, data, args.profile, args.lease,
                                             args.records == "on")
                    moto_cpu = cpu_seconds(moto.pid) - moto_cpu0 if moto is not None and kind == "moto" else 0.0
                    if kind == "memory":
                        calls = stats.write_calls + stats.read_calls
                        units = stats.write_units
                    else:
                        calls = sum(v for k, v in billing.items() if k.startswith("calls."))
                        units = billing["wcu"]
                    per_k = 1000 / max(points, 1)
                    print(f"| {kind} | {scenario} | {points} | {cpu:.2f} | {points / cpu:,.0f} | {calls * per_k:.2f} "
                          f"| {units * per_k:.2f} | {moto_cpu:.2f} |", flush=True)
    finally:
        stop(moto)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
