"""Benchmark 3 of issue 6: StatsD over UDP, Turok's gateway against etsy statsd 0.9.0.

For each receiver (a real ``twistd -n turok-gateway`` from the checkout against its own moto
server; etsy statsd 0.9.0 from npm, installed into bench/.node, flushing to ``counting_sink.py``)
and each datagram shape (1 counter line per datagram; 20 per datagram) it sends paced bursts of
counters ``bench.t<trial>.c<0..999>:1|c`` at increasing rates, ``--seconds`` each, and counts
end to end what came out: the sum of the ``stats_counts.bench.t<trial>.*`` values (SQS messages
for Turok, the graphite sink for statsd). Both flush every second. Reports, per shape, the
highest rate with under 0.1% loss and the receiver's CPU per 1,000 lines there, and the ratios
Turok/statsd. The sender is this (unmeasured) process and shares the 2 cores: the rates it
reaches are printed as achieved, not as requested.

    .venv/bin/python bench/statsd_udp.py [--seconds 2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common import REPO, cpu_seconds, free_port, human, machine, stop, wait_cpu_settled
from plaintext_ingest import Sink, TurokGateway

COUNTERS = 1000
SINGLE_RATES = (20_000, 40_000, 60_000, 90_000, 120_000, 160_000, 200_000, 250_000)  # lines/s = datagrams/s
MULTI_RATES = (200_000, 400_000, 600_000, 900_000, 1_200_000, 1_600_000, 2_000_000)  # lines/s in 20-line datagrams
MAX_LOSS = 0.001
TICK = 0.005
NODE_DIR = REPO / "bench" / ".node"


@dataclass
class Trial:
    key: str
    lines_per_datagram: int
    requested: int  # lines/s
    sent_lines: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    received: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent_lines / self.seconds if self.seconds else 0.0

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent_lines if self.sent_lines else 1.0


def datagrams(key: str, per: int) -> list[bytes]:
    """The 1,000 counters of one trial, ``per`` lines to a datagram, cycled by the sender."""
    lines = [f"bench.{key}.c{index:03d}:1|c" for index in range(COUNTERS)]
    return ["\n".join(lines[i:i + per]).encode() for i in range(0, COUNTERS, per)]


def blast(port: int, trial: Trial, seconds: float) -> None:
    """Send ``trial``'s counters at its requested rate for ``seconds``, paced every 5 ms."""
    packets = datagrams(trial.key, trial.lines_per_datagram)
    per_tick = trial.requested / trial.lines_per_datagram * TICK
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    sent = 0
    owed = 0.0
    start = time.monotonic()
    next_tick = start
    count = len(packets)
    index = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        owed += per_tick
        burst = int(owed)
        owed -= burst
        for _ in range(burst):
            try:
                send(packets[index])
            except OSError:  # ECONNREFUSED/ENOBUFS: counted as sent, so as lost
                pass
            index += 1
            if index == count:
                index = 0
        sent += burst
        next_tick += TICK
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    trial.seconds = time.monotonic() - start
    trial.sent_lines = sent * trial.lines_per_datagram
    sock.close()


def ensure_statsd() -> Path:
    """etsy statsd 0.9.0 in bench/.node (npm install once; never committed)."""
    stats_js = NODE_DIR / "node_modules" / "statsd" / "stats.js"
    if not stats_js.exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "statsd@0.9.0"], cwd=NODE_DIR,
                       check=True, timeout=600)
    return stats_js


def start_etsy(workdir: Path, sink_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = workdir / "statsd-config.js"
    config.write_text(json.dumps({
        "address": "127.0.0.1", "port": port, "mgmt_address": "127.0.0.1", "mgmt_port": free_port(),
        "flushInterval": 1000, "deleteIdleStats": True, "backends": ["./backends/graphite"],
        "graphiteHost": "127.0.0.1", "graphitePort": sink_port,
    }))
    stats_js = ensure_statsd()
    process = subprocess.Popen(["node", str(stats_js), str(config)], cwd=stats_js.parent,
                               stdout=open(workdir / "statsd.log", "w"), stderr=subprocess.STDOUT)
    # UDP: nothing to connect to; wait for the management TCP port instead
    time.sleep(2.0)
    if process.poll() is not None:
        raise RuntimeError("etsy statsd exited at start-up; see " + str(workdir / "statsd.log"))
    return process, port


def run_trials(pid: int, port: int, trials: list[Trial], seconds: float, timeout: float) -> None:
    for trial in trials:
        before = cpu_seconds(pid)
        t0 = time.monotonic()
        blast(port, trial, seconds)
        cpu, _, _ = wait_cpu_settled(pid, t0, lambda: True, timeout, idle_seconds=0.6)
        # flushes of idle counters cost a little CPU every second; one settles within 0.6 s
        trial.cpu = cpu - before


def turok_received(turok: TurokGateway) -> dict[str, float]:
    from turok_core.wire.codec import decode_body
    sums: dict[str, float] = {}
    prefix = "stats_counts.bench."
    for _ in range(100_000):
        reply = turok.sqs.receive_message(QueueUrl=turok.queue_url, MaxNumberOfMessages=10,
                                          VisibilityTimeout=3600, WaitTimeSeconds=0)
        messages = reply.get("Messages", [])
        if not messages:
            break
        for message in messages:
            for turok_message in decode_body(message["Body"]):
                if turok_message.metric.startswith(prefix):
                    key = turok_message.metric[len(prefix):].split(".", 1)[0]
                    sums[key] = sums.get(key, 0.0) + sum(turok_message.datapoints)
    return sums


def plan(args) -> list[Trial]:
    trials = []
    single = SINGLE_RATES[::2] if args.quick else SINGLE_RATES
    multi = MULTI_RATES[::2] if args.quick else MULTI_RATES
    for rate in single:
        trials.append(Trial(f"t{len(trials)}", 1, rate))
    for rate in multi:
        trials.append(Trial(f"t{len(trials)}", 20, rate))
    return trials


def best(trials: list[Trial], per: int) -> Optional[Trial]:
    ok = [t for t in trials if t.lines_per_datagram == per and t.loss < MAX_LOSS]
    return max(ok, key=lambda t: t.rate) if ok else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each burst")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="every other rate only")
    parser.add_argument("--receivers", default="turok,statsd")
    args = parser.parse_args(argv)
    print(f"statsd over UDP: 1,000 counters, bursts of {args.seconds:g}s, loss counted end to end; {machine()}",
          flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-statsd-"))
    results: dict[str, list[Trial]] = {}
    try:
        if "statsd" in args.receivers:
            sink = Sink(workdir, "statsd", sum_prefix="stats_counts.bench.")
            process = None
            try:
                process, port = start_etsy(workdir, sink.port)
                trials = plan(args)
                run_trials(process.pid, port, trials, args.seconds, args.timeout)
                time.sleep(3.0)  # the last flush
                sums = json.loads(sink.path.read_text() or "{}") if sink.path.exists() else {}
                for trial in trials:
                    trial.received = sums.get(trial.key, 0.0)
                results["etsy statsd 0.9.0"] = trials
            finally:
                stop(process)
                sink.close()
        if "turok" in args.receivers:
            turok = TurokGateway(workdir)
            try:
                turok.start_moto()
                statsd_port = free_port()
                pid = turok.start(0, {"TUROK_STATSD_PORT": str(statsd_port),
                                      "TUROK_STATSD_FLUSH_INTERVAL_SECONDS": "1",
                                      "TUROK_STATSD_DELETE_IDLE_STATS": "true",
                                      "TUROK_WINDOW_GRACE_SECONDS": "1"})
                trials = plan(args)
                run_trials(pid, statsd_port, trials, args.seconds, args.timeout)
                # windows (10 s steps) close a step + grace after their slot, then the 1 s flush
                deadline = time.monotonic() + 60
                sums: dict[str, float] = {}
                time.sleep(15)
                while time.monotonic() < deadline:
                    for key, value in turok_received(turok).items():
                        sums[key] = sums.get(key, 0.0) + value
                    if all(sums.get(t.key, 0) >= t.sent_lines for t in trials):
                        break
                    time.sleep(2)
                for trial in trials:
                    trial.received = sums.get(trial.key, 0.0)
                results["turok-gateway"] = trials
            finally:
                turok.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for name, trials in results.items():
        print(f"\n{name}:")
        for t in trials:
            print(f"  {t.lines_per_datagram:2d} line(s)/datagram  asked {human(t.requested):>6s} lines/s  "
                  f"sent {human(t.rate):>6s}/s  loss {t.loss:7.3%}  "
                  f"CPU {t.cpu / t.sent_lines * 1e6:.2f} ms/1,000 lines")
    print("\n| datagrams | receiver | highest rate with < 0.1% loss (lines/s) | CPU per 1,000 lines |")
    print("|---|---|---|---|")
    for per, label in ((1, "one metric each"), (20, "20 metrics each")):
        for name, trials in results.items():
            top = best(trials, per)
            print(f"| {label} | {name} | {human(top.rate) if top else 'none'} | "
                  f"{f'{top.cpu / top.sent_lines * 1e6:.2f} ms' if top else 'n/a'} |")
        if len(results) == 2:
            turok_top = best(results["turok-gateway"], per)
            etsy_top = best(results["etsy statsd 0.9.0"], per)
            if turok_top and etsy_top:
                print(f"| {label} | Turok/statsd | {turok_top.rate / etsy_top.rate:.2f}x | "
                      f"{(etsy_top.cpu / etsy_top.sent_lines) / (turok_top.cpu / turok_top.sent_lines):.2f}x "
                      f"less CPU per line |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
