"""turokd's heap per metric held, in process: what its core keeps per metric, by allocation site.

    .venv/bin/python bench/turokd_heap.py [--metrics 2000] [--slots 440] [--top 12]
                                          [--block-slots 0] [--coarse-block-slots 0]

Feeds ``BlockWriter`` (in this process, on a simulated clock, into a ``MemoryBlockStore``, owning
the metrics as a lease holder does, routing old slots as turokd does) one gateway flush per 10 s
slot of ``bench/turokd_cpu.py``'s mixed workload (counters and two-decimal gauges), from a UTC
midnight, holding each batch's receipts (``HeldReceipts``) and announcing new names
(``Announcer``) as the service does; then ``tracemalloc``'s growth ÷ metrics, by source line.
At the default block length (432 slots) ``--slots 440`` closes the first 72-minute block: the
state of steady operation, one open 10 s block per metric and its pending coarse blocks. Fewer
slots than a block show the open block alone. The store's own items (``storage/memory.py``,
``block_layout.py``) are in the total: they are DynamoDB's, not turokd's memory.
"""
from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from bench.turokd_cpu import START, STEP, batches, flushes  # noqa: E402
from turok_core.model.config import TurokConfig  # noqa: E402
from turok_core.model.schemas import load_schemas  # noqa: E402
from turok_core.storage.memory import MemoryBlockStore  # noqa: E402
from turok_core.turokd.announcer import Announcer  # noqa: E402
from turok_core.turokd.block_writer import BlockWriter  # noqa: E402
from turok_core.turokd.held_receipts import HeldReceipts  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=440, help="10 s slots sent (440: past the first block)")
    parser.add_argument("--block-slots", type=int, default=0, help="turokd's block_slots (0: the default length)")
    parser.add_argument("--coarse-block-slots", type=int, default=0,
                        help="turokd's coarse_block_slots (0: the default, 720 at 1 min; 360: as long as the grid)")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    config = TurokConfig(block_slots=args.block_slots, coarse_block_slots=args.coarse_block_slots)
    schemas = load_schemas(config)
    data = flushes(args.metrics, args.slots)  # encoded before measuring
    now = [float(START)]
    writer = BlockWriter(MemoryBlockStore(config), config, schemas, clock=lambda: now[0],
                         owned_since=lambda metric: float(START - 86400), route_old=True)
    announcer = Announcer()
    held = HeldReceipts(config.visibility_timeout_seconds, config.block_tick_seconds)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    for slot, bodies in enumerate(data):
        now[0] = START + slot * STEP + 21  # a live point reaches turokd ~21 s after its slot
        for received in batches(bodies, f"s{slot}"):
            batch = writer.hold(received)
            held.track(batch.held, now[0])
            announcer.mark_announced(announcer.new_names(sorted(batch.metrics)))
        held.done(writer.close().deletable)
    del data, batch, received
    gc.collect()
    growth = tracemalloc.take_snapshot().compare_to(before, "lineno")
    tracemalloc.stop()
    repo = str(Path(__file__).resolve().parent.parent) + "/"
    print(f"turokd heap: {args.metrics:,} metrics x {args.slots} slots of 10 s, block_slots "
          f"{args.block_slots or 'default'}, coarse_block_slots {args.coarse_block_slots or 'default'}; {machine()}")
    print(f"open blocks {writer.open.open_blocks:,}, pending coarse blocks "
          f"{len(writer.rollups) if writer.rollups is not None else 0:,}, held messages {len(held):,}")
    print(f"\ngrowth per metric: {sum(stat.size_diff for stat in growth) / args.metrics:,.0f} bytes\n")
    print("| bytes per metric | objects | where |")
    print("|---|---|---|")
    for stat in growth[:args.top]:
        frame = stat.traceback[0]
        print(f"| {stat.size_diff / args.metrics:,.0f} | {stat.count_diff:,} "
              f"| {frame.filename.replace(repo, '')}:{frame.lineno} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
