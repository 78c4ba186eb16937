"""The gateway's encoding step alone (SQS envelope), or with ``--blocks`` turokd's block format v2.

For a few data shapes (100,000 windows by default, names like ``servers.web042.cpu.user``),
buffers the points in a real ``WindowBuffer``, then times ``release`` + ``encode_messages`` in
this process (CPU time, median of ``--repeat``) and reports, per point: CPU, body bytes, and what
SQS would bill for a billion points (every 64 KB of a request is one request, $0.40 a million).
Compares zlib levels, and with ``--ref REV`` the codec of another git revision (e.g. ``main``) on
the same data, run through its own release path as that revision's gateway would.

    .venv/bin/python bench/codec.py [--windows 100000] [--repeat 5] [--levels 1,6] [--ref main]

``--blocks``: block format v2 instead (``turok_core/storage/block_codec.py`` and its C twin), on a
day of ``bench/cost.py``'s mixed workload cut into the blocks turokd writes (10 s, and its own
1-minute and hourly averages): CPU per point to encode and decode each value kind and archive,
bytes per point and the values codecs used; with ``--ref REV`` also that revision's codec (its
``_blockcodec.c`` built in a temporary directory) on the same blocks, and the ratios; then the
bits per value of three layouts of codec 0x05's ulp corrections on rollups of two-decimal gauges,
and the bytes per value of codec 0x08's split doubles at several escape lengths.

    .venv/bin/python bench/codec.py --blocks [--metrics 100] [--python-metrics 10] [--repeat 5] [--ref main]
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

from common import REPO, machine, median  # (puts the checkout first on sys.path)

from turok_core.turokd.rollup import rollup_known
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
    parser.add_argument("--blocks", action="store_true", help="measure block format v2 instead")
    parser.add_argument("--metrics", type=int, default=100, help="--blocks: metric-days for the C codecs")
    parser.add_argument("--python-metrics", type=int, default=10,
                        help="--blocks: metric-days for the pure-Python references (0: none)")
    args = parser.parse_args(argv)
    if args.blocks:
        return main_blocks(args)
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


# --- block format v2 (turok_core/storage/block_codec.py and _blockcodec.c): --blocks

# bench/cost.py's mix (5 : 3 : 2), ordered so that any 3 metrics hold every kind
KINDS = ("counters", "2-decimal gauges", "doubles", "counters", "2-decimal gauges", "counters", "doubles",
         "counters", "2-decimal gauges", "counters")


def day_of_blocks(metrics: int, seed: int = 1) -> dict[tuple[str, str], list[list[Optional[float]]]]:
    """A day of ``bench/cost.py``'s mixed workload per metric (half counters with increments of
    0-5,000, 30% two-decimal gauges, 20% full-precision doubles, every 10 s), cut into the blocks
    turokd writes (432 slots of 10 s, 360 of 1 min, 24 of 1 h) with turokd's own rollup
    (average): {(kind, archive): blocks}."""
    rng = random.Random(seed)
    out: dict[tuple[str, str], list[list[Optional[float]]]] = {}
    for metric in range(metrics):
        kind = KINDS[metric % len(KINDS)]
        if kind == "counters":
            total, fine = rng.randint(0, 10 ** 9), []
            for _ in range(8640):
                total += rng.randint(0, 5000)
                fine.append(float(total))
        elif kind == "2-decimal gauges":
            fine = [round(rng.uniform(0, 100), 2) for _ in range(8640)]
        else:
            fine = [rng.uniform(0, 1000) for _ in range(8640)]
        minutes = [rollup_known(fine[i:i + 6], 6, "average", 0.0) for i in range(0, 8640, 6)]
        hours = [rollup_known(minutes[i:i + 60], 60, "average", 0.0) for i in range(0, 1440, 60)]
        for archive, values, slots in (("10 s", fine, 432), ("1 min", minutes, 360), ("1 h", hours, 24)):
            out.setdefault((kind, archive), []).extend(values[i:i + slots] for i in range(0, len(values), slots))
    return out


def ref_block_codecs(rev: str, workdir: Path) -> tuple[Optional[ModuleType], ModuleType]:
    """Git revision ``rev``'s block codec: its ``_blockcodec.c`` built here (None without a
    compiler) and its ``block_codec.py``, loaded beside this checkout's."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout
    listed = subprocess.run(["git", "ls-tree", "--name-only", rev, "turok_core/storage/"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split()
    for path in listed:  # the C file and the headers it includes (since codec 0x08)
        if Path(path).name.startswith("_blockcodec") and Path(path).suffix in (".c", ".h"):
            (workdir / Path(path).name).write_text(show(path))
    c_module = None
    try:
        from setuptools import Distribution, Extension
        dist = Distribution({"ext_modules": [Extension("_blockcodec", [str(workdir / "_blockcodec.c")],
                                                       extra_compile_args=["-O2"])]})
        build = dist.get_command_obj("build_ext")
        build.build_lib = build.build_temp = str(workdir)
        build.ensure_finalized()
        build.run()
        built = next(workdir.glob("_blockcodec*.so"))
        spec = importlib.util.spec_from_file_location("_blockcodec", built)
        c_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(c_module)
    except Exception as exc:  # no compiler: the reference alone
        print(f"({rev}'s _blockcodec.c not built: {exc})")
    spec = importlib.util.spec_from_loader("turok_core.storage._block_codec_ref", loader=None)
    py_module = importlib.util.module_from_spec(spec)
    doubles = "turok_core.storage.block_codec_doubles"
    own_doubles = sys.modules.get(doubles)
    try:  # a revision with the doubles codecs apart: its own module, not this checkout's
        doubles_module = ModuleType(doubles)
        exec(compile(show("turok_core/storage/block_codec_doubles.py"), f"{rev}:block_codec_doubles.py", "exec"),
             doubles_module.__dict__)
        sys.modules[doubles] = doubles_module
    except subprocess.CalledProcessError:
        pass
    try:
        exec(compile(show("turok_core/storage/block_codec.py"), f"{rev}:block_codec.py", "exec"), py_module.__dict__)
    finally:
        if own_doubles is not None:
            sys.modules[doubles] = own_doubles
    return c_module, py_module


def measure_blocks(blocks: list, codec: ModuleType, repeat: int) -> tuple[float, float, int, Counter]:
    """(median CPU s to encode the blocks, median CPU s to decode them, bytes, codec bytes used)."""
    encodes, decodes, blobs = [], [], []
    for _ in range(repeat):
        start = time.process_time()
        blobs = [codec.encode(block) for block in blocks]
        encodes.append(time.process_time() - start)
        start = time.process_time()
        for blob in blobs:
            codec.decode(blob)
        decodes.append(time.process_time() - start)
    used = Counter(blob[values_offset(blob)] if len(blob) > 2 else 0 for blob in blobs)
    return median(encodes), median(decodes), sum(map(len, blobs)), used


def values_offset(blob: bytes) -> int:
    """Where a v2 blob's values codec byte is (after the version, n and the gap runs)."""
    offset, numbers = 1, []
    while len(numbers) < 1 or sum(numbers[1:]) < numbers[0]:
        value = shift = 0
        while True:
            byte = blob[offset]
            offset += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        numbers.append(value)
    return offset


def correction_layouts(blocks: int = 20, slots: int = 360) -> None:
    """Bits per value that three layouts of codec 0x05's ulp corrections take on turokd's rollups
    of two-decimal gauges (why the format has a flag bit per value)."""
    from turok_core.storage import block_codec

    def zigzag(value: int) -> int:
        return value << 1 if value >= 0 else ((-value) << 1) - 1

    def uvarint_size(value: int) -> int:
        return max(1, (value.bit_length() + 6) // 7)
    print(f"\nulp corrections of rollups of two-decimal gauges ({blocks} blocks of {slots}): bits per value")
    print("| rollup | nonzero | flag bit + zigzag - 1 (the format) | zigzag in a fixed width | (index, c) list |")
    print("|---|---|---|---|---|")
    for over, aggregation, gap in ((3, "average", 0.0), (6, "average", 0.0), (6, "average", 0.05),
                                   (12, "average", 0.0), (60, "average", 0.0), (6, "sum", 0.0), (60, "sum", 0.05)):
        rng = random.Random(over)
        flags = fixed = listed = values = nonzero = 0
        for _ in range(blocks):
            rollups = []
            for _ in range(slots):
                known = [round(rng.uniform(0, 100), 2) for _ in range(over) if rng.random() >= gap]
                if known:
                    rollups.append(rollup_known(known, over, aggregation, 0.0))
            near = block_codec._scaled(rollups, block_codec.MAX_ULPS)
            if near is None or not any(near[2]):
                continue
            ulps = near[2]
            count = sum(map(bool, ulps))
            values += len(ulps)
            nonzero += count
            width = max(zigzag(c) - 1 for c in ulps if c).bit_length()
            flags += 8 + (len(ulps) + width * count + 7) // 8 * 8
            fixed += 8 + (len(ulps) * max(map(zigzag, ulps)).bit_length() + 7) // 8 * 8
            size, last = uvarint_size(count), -1
            for index, c in enumerate(ulps):
                if c:
                    size, last = size + uvarint_size(index - last - 1) + uvarint_size(zigzag(c)), index
            listed += 8 * size
        print(f"| {aggregation} of {over}{' with gaps' if gap else ''} | {nonzero / values:.0%} | "
              f"{flags / values:.2f} | {fixed / values:.2f} | {listed / values:.2f} |")


def split_escapes(blocks: int = 20) -> None:
    """Bytes per value codec 0x08 takes at each escape length (after how many 1 bits an exponent
    is stored as its field), on a few shapes of doubles (why the format escapes after 8)."""
    from turok_core.storage.block_codec_doubles import SPLIT_ESCAPE
    rng = random.Random(7)
    shapes = {
        "uniform 0-1,000 (cost.py's doubles)": lambda: rng.uniform(0, 1000),
        "uniform -1e9-1e9": lambda: rng.uniform(-1e9, 1e9),
        "exponential, mean 1": lambda: rng.expovariate(1),
        "uniform 0-1,000, 10% zeros": lambda: 0.0 if rng.random() < 0.1 else rng.uniform(0, 1000),
        "lognormal, sigma 3": lambda: rng.lognormvariate(0, 3),
    }
    escapes = (4, 6, 8, 10, 12, 15, 20)
    print(f"\nsplit doubles (codec 0x08): bytes per value by escape length ({blocks} blocks of 432; "
          f"the format's: {SPLIT_ESCAPE})")
    print("| values | " + " | ".join(f"escape {e}" for e in escapes) + " |")
    print("|---|" + "---|" * len(escapes))
    for label, draw in shapes.items():
        sizes = dict.fromkeys(escapes, 0)
        for _ in range(blocks):
            words = [struct.unpack("<Q", struct.pack("<d", draw()))[0] for _ in range(432)]
            fields = [word >> 52 & 0x7FF for word in words]
            top, mixed = max(fields), len({word >> 63 for word in words}) == 2
            for escape in escapes:
                size = 13 + sum(53 + mixed + (top - f if top - f < escape else escape + 10) for f in fields)
                sizes[escape] += 1 + (size + 7) // 8
        print(f"| {label} | " + " | ".join(f"{sizes[e] / (432 * blocks):.3f}" for e in escapes) + " |")


def main_blocks(args: argparse.Namespace) -> int:
    from turok_core.storage import block_codec
    from turok_core.storage.native import blockcodec, describe
    codecs: list[tuple[str, ModuleType, int]] = []  # (label, module, metrics measured)
    with tempfile.TemporaryDirectory(prefix="turok-blockcodec-") as workdir:
        if args.ref:
            ref_c, ref_py = ref_block_codecs(args.ref, Path(workdir))
            if ref_c is not None:
                codecs.append((f"{args.ref}, C", ref_c, args.metrics))
            if args.python_metrics:
                codecs.append((f"{args.ref}, Python", ref_py, args.python_metrics))
        if blockcodec is None:
            print(f"this checkout's C codec: {describe()}")
        else:
            codecs.append(("this checkout, C", blockcodec, args.metrics))
        if args.python_metrics:
            codecs.append(("this checkout, Python", block_codec, args.python_metrics))
        days = {count: day_of_blocks(count) for count in {metrics for _, _, metrics in codecs}}
        print(f"a day of bench/cost.py's mixed workload, blocks as turokd writes them; {machine()}; "
              f"CPU medians of {args.repeat} runs")
        print("| values | archive | codec | encode ns/point | decode ns/point | bytes/point | codecs used |")
        print("|---|---|---|---|---|---|---|")
        results: dict[tuple[str, str], list[float]] = {}  # (rows, label) → encode, decode, bytes, points
        for kind, archive in days[args.metrics]:
            for label, module, metrics in codecs:
                blocks = days[metrics][(kind, archive)]
                points = sum(len(block) for block in blocks)
                encode, decode, size, used = measure_blocks(blocks, module, args.repeat)
                for rows in (f"{kind} | {archive}", "all | all"):
                    result = results.setdefault((rows, label), [0.0, 0.0, 0, 0])
                    for i, figure in enumerate((encode, decode, size, points)):
                        result[i] += figure
                print(f"| {kind} | {archive} | {label} | {encode / points * 1e9:.0f} | {decode / points * 1e9:.0f} | "
                      f"{size / points:.2f} | {', '.join(f'{c:#04x}: {n}' for c, n in sorted(used.items()))} |",
                      flush=True)
        for (rows, label), (encode, decode, size, points) in results.items():
            if rows == "all | all":
                print(f"| all | all | {label} | {encode / points * 1e9:.0f} | {decode / points * 1e9:.0f} | "
                      f"{size / points:.2f} | |")
        if args.ref:
            print(f"\nthis checkout against {args.ref} on the same blocks (ratios: lower is better)")
            print("| values | archive | language | encode CPU | decode CPU | bytes |")
            print("|---|---|---|---|---|---|")
            for (rows, label), new in sorted(results.items(), key=lambda item: item[0][0] == "all | all"):
                old = results.get((rows, label.replace("this checkout", args.ref)))
                if label.startswith("this checkout") and old:
                    print(f"| {rows} | {label.split(', ')[1]} | {new[0] / old[0]:.2f}× | {new[1] / old[1]:.2f}× | "
                          f"{new[2] / old[2]:.2f}× |")
    correction_layouts()
    split_escapes()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
