"""turokd's memory per open block: resident bytes a real `twistd turokd` spends on the blocks it holds.

    .venv/bin/python bench/turokd_memory.py [--metrics 100000] [--slots 6]

Starts a moto server and a real turokd on it, sends ``--metrics`` metrics × ``--slots`` 10 s slots
stamped now (so their 15-minute blocks stay open in turokd's memory, as in steady operation), waits
until turokd holds every SQS message (none left visible), and reads its RSS from /proc before and after.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, VENV_BIN, free_port, machine, moto_command, moto_env, rss_bytes, stop, wait_port  # noqa: E402
from turok_core.dev.stack import write_config  # noqa: E402
from turok_core.model.config import TurokConfig  # noqa: E402
from turok_core.model.message import TurokMessage  # noqa: E402
from turok_core.runtime.aws import make_client  # noqa: E402
from turok_core.runtime.provision import provision  # noqa: E402
from turok_core.wire.codec import encode_messages  # noqa: E402
from turok_core.wire.queues import MessageQueue  # noqa: E402


def queue_counts(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=100000)
    parser.add_argument("--slots", type=int, default=6, help="10 s slots per metric (all in one open block)")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = free_port()
    moto = subprocess.Popen(moto_command(port), env=moto_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    turokd = None
    try:
        wait_port(port, 30, moto)
        tag = uuid.uuid4().hex[:6]
        config = TurokConfig(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_region="us-east-1",
                             queue_name=f"mem-{tag}", index_queue_name=f"mem-index-{tag}",
                             dead_letter_queue_name=f"mem-dlq-{tag}", index_bucket=f"mem-{tag}",
                             table_prefix=f"mem{tag}", cache_port=free_port(), self_metrics_interval_seconds=0)
        provision(config)
        with tempfile.TemporaryDirectory(prefix="turok-mem-") as workdir:
            ini = Path(workdir) / "turokd.ini"
            write_config(config, ini)
            env = {k: v for k, v in os.environ.items() if not k.startswith("TUROK_")}
            env["PYTHONPATH"] = str(REPO)
            turokd = subprocess.Popen([str(VENV_BIN / "twistd"), "-n", "--pidfile=", f"--logfile={workdir}/turokd.log",
                                       "turokd", "--config", str(ini)], cwd=workdir, env=env)
            wait_port(config.cache_port, 60, turokd)
            time.sleep(2)
            before = rss_bytes(turokd.pid)
            now = int(time.time())
            block_start = now - now % 900  # the current 15-minute block of 10 s slots
            slots = [block_start + 10 * i for i in range(args.slots)]
            sqs = make_client("sqs", config)
            queue = MessageQueue(sqs, config.queue_name)
            url = queue.url
            sent = 0
            for first in range(0, args.metrics, 10000):
                messages = [TurokMessage(f"bench.mem.host{m // 100:04d}.metric{m % 100:02d}", slot, [float(m)], 10,
                                         "average")
                            for m in range(first, min(args.metrics, first + 10000)) for slot in slots]
                bodies = encode_messages(messages)
                queue.send(bodies)
                sent += len(bodies)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                visible, held = queue_counts(sqs, url)
                if visible == 0 and held >= sent:
                    break
                time.sleep(1)
            time.sleep(3)
            after = rss_bytes(turokd.pid)
    finally:
        stop(turokd)
        stop(moto)
    blocks = args.metrics
    print(f"\nturokd memory per open block: {args.metrics:,} metrics × {args.slots} slots of 10 s held "
          f"in one open block each; {machine()}")
    print(f"RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB: "
          f"{(after - before) / blocks:.0f} bytes per open block ({(after - before) / (blocks * args.slots):.0f} "
          f"per held slot)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
