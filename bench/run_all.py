"""``make bench``: run every benchmark of bench/ in turn, each printing its own table.

    .venv/bin/python bench/run_all.py [--quick]

``--quick``: 200,000 points and one run for the ingest benchmarks (plaintext, pickle), every other rate for StatsD,
one run for memory, 20,000 windows for the codec, 100 series and a 100,000-name index for reads,
20,000 open blocks for turokd's memory, 3 freshness samples and an hour of 1,000 metrics for the
cost, 1,000 metrics for the whole pipeline and late data, 1,000 metrics for 90 s for turokd's scale,
100,000 tagged series for the tag index (minutes instead of two hours).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    runs = [
        ["plaintext_ingest.py"] + (["--points", "200000", "--repeat", "1"] if quick else []),
        ["plaintext_ingest.py", "--protocol", "pickle"] + (["--points", "200000", "--repeat", "1"] if quick else []),
        ["statsd_udp.py"] + (["--quick"] if quick else []),
        ["memory.py"] + (["--quick"] if quick else []),
        ["codec.py"] + (["--windows", "20000", "--repeat", "3"] if quick else []),
        ["reads.py"] + (["--series", "100", "--renders", "3", "--find-names", "100000"] if quick else []),
        ["turokd_memory.py"] + (["--metrics", "20000"] if quick else []),
        ["freshness.py"] + (["--samples", "3"] if quick else []),
        # issue 4's day of 10,000 metrics takes about 40 minutes with --writes batch (same write units)
        ["cost.py"] + (["--metrics", "1000", "--hours", "1"] if quick else ["--writes", "batch"]),
        # issue 13: the whole path (real processes on moto); full sizes take 10-20 minutes each
        ["pipeline.py"] + (["--metrics", "1000"] if quick else []),
        ["late_data.py"] + (["--metrics", "1000"] if quick else []),
        ["turokd_scale.py"] + (["--metrics", "1000", "--duration", "90"] if quick else []),
        # memory with default-length blocks held open (the full size: about 45 minutes, 2-3 GB)
        ["turokd_scale.py", "--open"] + (["--metrics", "20000", "--duration", "60"] if quick
                                         else ["--metrics", "200000", "--duration", "90", "--sample", "15"]),
        ["turokd_heap.py"],
        # issue 15: turok-import of 10,000 whisper files (in memory), and the command on moto
        ["importer.py"] + (["--files", "1000"] if quick else ["--moto-files", "20"]),
        # issue 14: the tag index (a million tagged series: a few minutes)
        ["tags.py"] + (["--series", "100000"] if quick else []),
    ]
    failed = 0
    for script, *args in runs:
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / script), *args], cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
