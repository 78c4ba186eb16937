"""Benchmarks 1 and 2 of issue 6: Carbon plaintext (and, with ``--protocol pickle``, pickle)
ingest over TCP, Turok's gateway against the anchors.

Sends N points (default 2,000,000 over 10,000 names like ``servers.web042.cpu.user``) over C TCP
connections to, in turn and in the same run:

* the Turok gateway: a real ``twistd -n turok-gateway`` from this checkout (PYTHONPATH=repo),
  sending to a moto server this script starts; delivered = the points of ``servers.*`` in the
  Turok messages found on the SQS queue afterwards (received and decoded here);
* carbon-relay from PyPI carbon 1.1.10 (.venv), MAX_QUEUE_SIZE large enough for the burst,
  forwarding pickle to ``counting_sink.py``;
* carbon-c-relay from Debian, ``-q 4000000``, forwarding plaintext to ``counting_sink.py``;
* carbon-cache from PyPI carbon 1.1.10, writing whisper files with no rate limits; delivered =
  the points it reports committed to whisper (its own ``committedPoints``);
* on request (``--receivers …,turok-pure``), the same gateway with ``TUROK_PURE_PYTHON=1``:
  without its C extension, to show what the extension is worth.

For each: CPU seconds of the receiving process (utime+stime, all threads, /proc) from just before
the first byte until it stops rising, points per CPU-second, wall points/s (first byte → CPU
settled) and the fraction delivered. Prints medians of ``--repeat`` runs and the ratios
Turok/anchor (median of the per-run ratios). Everything binds 127.0.0.1.

    .venv/bin/python bench/plaintext_ingest.py [--points 2000000] [--connections 2] [--repeat 3]
        [--per-window 1] [--protocol plaintext|pickle] [--receivers LIST] [--profile FILE]

With ``--protocol pickle`` the same points go as 500-point pickle frames to the gateway's and
carbon-relay's pickle receivers (carbon-c-relay has none).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from common import (
    REPO,
    VENV_BIN,
    cpu_seconds,
    free_port,
    human,
    machine,
    median,
    moto_command,
    moto_env,
    stop,
    wait_cpu_settled,
    wait_port,
)

NAMES = 10_000
STEP = 10  # the default schema's base step for servers.*
HOST_METRICS = ("user", "system", "idle", "iowait", "nice", "irq", "softirq", "steal", "guest", "load")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Result:
    receiver: str
    points: int
    cpu: float
    wall: float
    delivered: int
    finished: bool

    @property
    def per_cpu(self) -> float:
        return self.points / self.cpu if self.cpu > 0 else float("nan")

    @property
    def per_wall(self) -> float:
        return self.points / self.wall if self.wall > 0 else float("nan")

    @property
    def fraction(self) -> float:
        return self.delivered / self.points


def metric_names() -> list[str]:
    """10,000 names: 1,000 hosts × 10 cpu metrics."""
    return [f"servers.web{host:03d}.cpu.{metric}" for host in range(NAMES // len(HOST_METRICS))
            for metric in HOST_METRICS]


def build_payloads(points: int, connections: int, per_window: int) -> list[bytes]:
    """One payload per connection; a host's names always go over the same connection.

    Point k of a name is stamped ``k // per_window`` steps back from an hour ago, so
    ``per_window`` points share each 10 s window (1: one point per window, as a collector
    reporting every 10 s produces) and every window is already closed when it arrives."""
    names = metric_names()
    per_name = -(-points // NAMES)
    newest = (int(time.time()) - 3600) // STEP * STEP
    parts: list[list[str]] = [[] for _ in range(connections)]
    sent = 0
    for k in range(per_name):
        stamp = newest - (per_name - 1 - k) // per_window * STEP
        take = min(NAMES, points - sent)
        for index in range(take):
            value = (index * 7 + k) % 1000
            parts[(index // len(HOST_METRICS)) % connections].append(
                f"{names[index]} {value}.{k % 10} {stamp}\n")
        sent += take
    return ["".join(part).encode() for part in parts]


def to_pickle_frames(payload: bytes, per_frame: int = 500) -> bytes:
    """Re-encode plaintext lines as Carbon pickle frames of ``per_frame`` points (protocol 2)."""
    import pickle as pickle_module
    import struct
    lines = payload.split(b"\n")
    points = []
    for line in lines:
        if line:
            name, value, stamp = line.split()
            points.append((name.decode(), (int(stamp), float(value))))
    frames = []
    for start in range(0, len(points), per_frame):
        body = pickle_module.dumps(points[start:start + per_frame], protocol=2)
        frames.append(struct.pack("!L", len(body)) + body)
    return b"".join(frames)


def send_all(payloads: list[bytes], port: int, timeout: float) -> float:
    """Send each payload over its own connection, in parallel; returns monotonic start time."""
    errors: list[BaseException] = []

    def send(payload: bytes) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(timeout)
                try:  # wait for the receiver to close or time out: it has read everything
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(payload,), daemon=True) for payload in payloads]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise RuntimeError(f"sending failed: {errors[0]!r}")
    return start


def measure(name: str, pid: int, port: int, payloads: list[bytes], points: int,
            delivered: Callable[[], int], timeout: float) -> Result:
    """Send the payloads, wait for the receiver's CPU to settle with everything delivered."""
    before = cpu_seconds(pid)
    got = [0]
    start_holder: list[float] = []
    sender = threading.Thread(target=lambda: start_holder.append(send_all(payloads, port, timeout)), daemon=True)
    t0 = time.monotonic()
    sender.start()
    last_count = [0, time.monotonic()]

    def done() -> bool:
        if sender.is_alive():
            return False
        got[0] = delivered()
        now = time.monotonic()
        if got[0] != last_count[0]:
            last_count[:] = [got[0], now]
        # everything delivered, or nothing more arrived for 5 s: the rest was dropped
        return got[0] >= points or now - last_count[1] > 5.0

    cpu, end, finished = wait_cpu_settled(pid, t0, done, timeout)
    sender.join(1)
    if not finished:
        got[0] = delivered()
    return Result(name, points, cpu - before, end - t0, got[0], finished)


# --- Turok ------------------------------------------------------------------------------------
class TurokGateway:
    """moto on a free port + ``twistd -n turok-gateway`` from the checkout, one queue per run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.moto: Optional[subprocess.Popen] = None
        self.gateway: Optional[subprocess.Popen] = None
        self.port = 0
        self.queue_url = ""
        self.counted = 0
        self.bodies = 0
        self.gc_threshold = 0  # > 0: the gateway's first GC generation threshold (an experiment)

    def start_moto(self) -> None:
        self.moto_port = free_port()
        self.moto = subprocess.Popen(moto_command(self.moto_port), env=moto_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.moto_port, 30, self.moto)
        import boto3
        self.sqs = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{self.moto_port}", region_name="us-east-1",
                                aws_access_key_id="bench", aws_secret_access_key="bench")

    def start(self, run: int, extra_env: Optional[dict[str, str]] = None) -> int:
        """Start the gateway on a new queue; returns its pid."""
        queue = f"bench-ingest-{os.getpid()}-{run}"
        self.queue_url = self.sqs.create_queue(QueueName=queue)["QueueUrl"]
        self.counted = self.bodies = 0
        self.port = free_port()
        self.pickle_port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO), **CREDENTIALS)
        if self.gc_threshold:  # a sitecustomize the gateway's interpreter runs first
            site = self.workdir / "gc-site"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text(f"import gc\ngc.set_threshold({self.gc_threshold}, 10, 10)\n")
            env["PYTHONPATH"] = f"{site}{os.pathsep}{REPO}"
        env.update({
            "TUROK_AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.moto_port}", "TUROK_AWS_REGION": "us-east-1",
            "TUROK_QUEUE_NAME": queue, "TUROK_INTERFACE": "127.0.0.1",
            "TUROK_PLAINTEXT_PORT": str(self.port), "TUROK_PLAINTEXT_UDP_PORT": str(free_port()),
            "TUROK_PICKLE_PORT": str(self.pickle_port), "TUROK_STATSD_PORT": str(free_port()),
            "TUROK_GATEWAY_CACHE_PORT": str(free_port()),
            "TUROK_SELF_METRICS_INTERVAL_SECONDS": "3600",
            # a spool of its own: a previous run's spooled windows must not be replayed into this one
            "TUROK_SPOOL_DIR": tempfile.mkdtemp(prefix="spool-", dir=self.workdir),
        })
        env.update(extra_env or {})
        log = self.workdir / f"gateway-{run}.log"
        self.gateway = subprocess.Popen([str(VENV_BIN / "twistd"), "-n", "--pidfile=", f"--logfile={log}",
                                         "turok-gateway"], env=env, cwd=self.workdir,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 60, self.gateway)
        wait_port(self.pickle_port, 10, self.gateway)
        time.sleep(1.0)  # let start-up (queue lookup in the pool) finish before measuring
        return self.gateway.pid

    def delivered(self) -> int:
        """Receive (without deleting: they stay invisible) every message now on the queue and
        add up the datapoints of servers.* in them."""
        from turok_core.wire.codec import decode_body
        for _ in range(100_000):
            reply = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=3600, WaitTimeSeconds=0)
            messages = reply.get("Messages", [])
            if not messages:
                break
            for message in messages:
                self.bodies += 1
                for turok in decode_body(message["Body"]):
                    if turok.metric.startswith("servers."):
                        self.counted += len(turok.datapoints)
        return self.counted

    def stop(self) -> None:
        stop(self.gateway)
        self.gateway = None
        if self.queue_url:
            try:
                self.sqs.delete_queue(QueueUrl=self.queue_url)
            except Exception:  # best effort: the benchmark's moto server stops right after
                pass

    def close(self) -> None:
        self.stop()
        stop(self.moto)


# --- anchors ----------------------------------------------------------------------------------
class Sink:
    """``counting_sink.py`` in its own process."""

    def __init__(self, workdir: Path, tag: str, sum_prefix: str = "") -> None:
        self.port = free_port()
        self.path = workdir / f"sink-{tag}.count"
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("counting_sink.py")),
                                         str(self.port), str(self.path)] + ([sum_prefix] if sum_prefix else []))
        wait_port(self.port, 15, self.process)

    def count(self) -> int:
        try:
            return int(self.path.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        stop(self.process)


def start_carbon_relay(workdir: Path, sink_port: int, max_queue: int,
                       pickle: bool = False) -> tuple[subprocess.Popen, int]:
    root = workdir / "carbon"
    (root / "conf").mkdir(parents=True, exist_ok=True)
    for sub in ("storage", "log", "run"):
        (root / sub).mkdir(exist_ok=True)
    line_port, pickle_port = free_port(), free_port()
    (root / "conf" / "carbon.conf").write_text(f"""[cache]
STORAGE_DIR = {root}/storage
LOCAL_DATA_DIR = {root}/storage/whisper
LOG_DIR = {root}/log
PID_DIR = {root}/run

[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
ENABLE_UDP_LISTENER = False
RELAY_METHOD = consistent-hashing
REPLICATION_FACTOR = 1
DESTINATIONS = 127.0.0.1:{sink_port}:a
DESTINATION_PROTOCOL = pickle
MAX_QUEUE_SIZE = {max_queue}
MAX_DATAPOINTS_PER_MESSAGE = 500
USE_FLOW_CONTROL = True
CARBON_METRIC_INTERVAL = 0
LOG_LISTENER_CONN_SUCCESS = False
""")
    (root / "conf" / "storage-schemas.conf").write_text("[default]\npattern = .*\nretentions = 10s:1d\n")
    env = dict(os.environ, GRAPHITE_ROOT=str(root), GRAPHITE_CONF_DIR=str(root / "conf"))
    process = subprocess.Popen([str(VENV_BIN / "python"), str(VENV_BIN / "carbon-relay.py"),
                                f"--config={root}/conf/carbon.conf", "--nodaemon", f"--logdir={root}/log",
                                f"--pidfile={root}/run/relay.pid", "start"],
                               env=env, cwd=root, stdout=open(root / "log" / "stdout.log", "w"),
                               stderr=subprocess.STDOUT)
    wait_port(line_port, 30, process)
    wait_port(pickle_port, 10, process)
    return process, (pickle_port if pickle else line_port)


class CarbonCache:
    """carbon-cache 1.1.10 writing whisper files (10s:1h) with no create or update rate limit;
    delivered = the points it reports committed to whisper (its own ``committedPoints`` metric,
    every second; the few dozen points of its own metrics are counted too)."""

    def __init__(self, workdir: Path, pickle: bool = False, max_updates_per_second: str = "inf",
                 retentions: str = "10s:1h", settings: str = "") -> None:
        """``max_updates_per_second``: carbon's MAX_UPDATES_PER_SECOND (``1`` keeps the points in
        its cache, which the memory benchmark measures); ``retentions`` of every metric but its
        own; ``settings``: more ``[cache]`` lines of carbon.conf."""
        root = self.root = workdir / "carbon-cache"
        (root / "conf").mkdir(parents=True, exist_ok=True)
        for sub in ("storage", "log", "run"):
            (root / sub).mkdir(exist_ok=True)
        line_port, pickle_port, query_port = free_port(), free_port(), free_port()
        (root / "conf" / "carbon.conf").write_text(f"""[cache]
STORAGE_DIR = {root}/storage
LOCAL_DATA_DIR = {root}/storage/whisper
LOG_DIR = {root}/log
PID_DIR = {root}/run
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query_port}
ENABLE_UDP_LISTENER = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = {max_updates_per_second}
MAX_CREATES_PER_MINUTE = inf
USE_FLOW_CONTROL = True
CARBON_METRIC_INTERVAL = 1
CARBON_METRIC_PREFIX = carbon
LOG_LISTENER_CONN_SUCCESS = False
LOG_UPDATES = False
LOG_CREATES = False
{settings}
""")
        # its own metrics every second at 1 s, so no report overwrites another
        (root / "conf" / "storage-schemas.conf").write_text(
            f"[carbon]\npattern = ^carbon\\.\nretentions = 1s:1h\n\n"
            f"[default]\npattern = .*\nretentions = {retentions}\n")
        env = dict(os.environ, GRAPHITE_ROOT=str(root), GRAPHITE_CONF_DIR=str(root / "conf"))
        self.process = subprocess.Popen([str(VENV_BIN / "python"), str(VENV_BIN / "carbon-cache.py"),
                                         f"--config={root}/conf/carbon.conf", "--nodaemon", f"--logdir={root}/log",
                                         f"--pidfile={root}/run/cache.pid", "start"],
                                        env=env, cwd=root, stdout=open(root / "log" / "stdout.log", "w"),
                                        stderr=subprocess.STDOUT)
        wait_port(line_port, 30, self.process)
        wait_port(pickle_port, 10, self.process)
        self.port = pickle_port if pickle else line_port

    def delivered(self) -> int:
        import whisper

        total = 0
        for path in (self.root / "storage" / "whisper" / "carbon" / "agents").glob("*/committedPoints.wsp"):
            try:
                _info, values = whisper.fetch(str(path), time.time() - 3000)
            except Exception:  # being created or written
                continue
            total += int(sum(v for v in values if v))
        return total


def start_c_relay(workdir: Path, sink_port: int, queue: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "c-relay.conf"
    conf.write_text(f"""listen type linemode transport plain 127.0.0.1:{port} proto tcp;
cluster sink forward 127.0.0.1:{sink_port};
match * send to sink stop;
""")
    binary = shutil.which("carbon-c-relay") or "/usr/bin/carbon-c-relay"
    process = subprocess.Popen([binary, "-f", str(conf), "-q", str(queue), "-s", "-l", str(workdir / "c-relay.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, 15, process)
    return process, port


def print_profile(path: str, top: int = 18) -> None:
    """Summarise py-spy's collapsed stacks: share of samples per function, self and inclusive."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    if not os.path.exists(path):
        print(f"  py-spy wrote no profile to {path} (--native unsupported here?)")
        return
    with open(path) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [frame.split(" (", 1)[0] + " (" + frame.split(" (", 1)[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                      if " (" in frame else frame for frame in stack.split(";")]
            total += count
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count
    print(f"  profile of the gateway ({total} samples, all threads, {path}):")
    print("   self%  incl%  function")
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"  {100 * count / total:5.1f}  {100 * inclusive[frame] / total:5.1f}  {frame}")


# --- main -------------------------------------------------------------------------------------
RECEIVERS = ("turok", "turok-pure", "carbon-relay", "carbon-c-relay", "carbon-cache")


def run_once(run: int, args, payloads: list[bytes], workdir: Path, turok: TurokGateway) -> dict[str, Result]:
    results: dict[str, Result] = {}
    receivers = [r for r in RECEIVERS if r in args.receivers]
    for receiver in receivers:
        if receiver in ("turok", "turok-pure"):
            # turok-pure: the same gateway without its C extension (turok_core/native.py)
            pid = turok.start(run, {"TUROK_PURE_PYTHON": "1"} if receiver == "turok-pure" else None)
            spy = None
            if args.profile:  # sampling, non-blocking: a few % of the gateway's CPU at most
                spy = subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--nonblocking",
                                        "--rate", "100", "--format", "raw", "--output", args.profile]
                                       + (["--native"] if args.native else []),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            try:
                name = "turok-gateway" if receiver == "turok" else "turok-gateway, pure Python"
                result = measure(name, pid, turok.pickle_port if args.protocol == "pickle" else turok.port, payloads,
                                 args.points, turok.delivered,
                                 args.timeout)
                if args.verbose:
                    print(f"  turok: {turok.bodies} SQS bodies", flush=True)
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                turok.stop()
            if spy is not None:
                print_profile(args.profile)
        elif receiver == "carbon-cache":
            cache = CarbonCache(workdir / f"run{run}", pickle=args.protocol == "pickle")
            try:
                time.sleep(0.5)
                result = measure(receiver, cache.process.pid, cache.port, payloads, args.points, cache.delivered,
                                 args.timeout)
            finally:
                stop(cache.process)
        else:
            sink = Sink(workdir, f"{receiver}-{run}")
            process = None
            try:
                if receiver == "carbon-relay":
                    process, port = start_carbon_relay(workdir / f"run{run}", sink.port, args.queue,
                                                       pickle=args.protocol == "pickle")
                else:
                    process, port = start_c_relay(workdir, sink.port, args.queue)
                time.sleep(0.5)
                result = measure(receiver, process.pid, port, payloads, args.points, sink.count, args.timeout)
            finally:
                stop(process)
                sink.close()
        results[receiver] = result
        print(f"  run {run + 1} {result.receiver:15s} cpu {result.cpu:6.2f}s  {human(result.per_cpu):>7s} pts/CPU-s  "
              f"{human(result.per_wall):>7s} pts/s wall  delivered {result.fraction:7.2%}"
              f"{'' if result.finished else '  (TIMED OUT)'}", flush=True)
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--connections", type=int, default=2, choices=(1, 2, 3, 4))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-window", type=int, default=1,
                        help="points of one name per 10 s window (1 = a collector reporting every 10 s)")
    parser.add_argument("--queue", type=int, default=4_000_000, help="relay queue sizes (points)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per receiver and run")
    parser.add_argument("--receivers", default="turok,carbon-relay,carbon-c-relay,carbon-cache",
                        help="comma-separated, of: " + ",".join(RECEIVERS))
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--protocol", choices=("plaintext", "pickle"), default="plaintext",
                        help="pickle: the same points in 500-point pickle frames to the pickle receivers "
                             "(carbon-c-relay has none, so it is left out)")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the gateway into FILE (collapsed stacks)")
    parser.add_argument("--native", action="store_true", help="with --profile: C frames too (zlib, …)")
    parser.add_argument("--gc-threshold", type=int, default=0, metavar="N",
                        help="experiment: start the gateway with gc.set_threshold(N, 10, 10) (CPython's is 700)")
    args = parser.parse_args(argv)
    args.receivers = args.receivers.split(",")
    if args.protocol == "pickle":
        args.receivers = [r for r in args.receivers if r != "carbon-c-relay"]
    if args.points < NAMES:
        parser.error(f"--points must be at least {NAMES}")

    print(f"{args.protocol} ingest: {args.points:,} points over {NAMES:,} names, {args.connections} connection(s), "
          f"{args.per_window} point(s) per window, {args.repeat} run(s); {machine()}", flush=True)
    payloads = build_payloads(args.points, args.connections, args.per_window)
    if args.protocol == "pickle":
        payloads = [to_pickle_frames(payload) for payload in payloads]
    workdir = Path(tempfile.mkdtemp(prefix="turok-bench-ingest-"))
    turok = TurokGateway(workdir)
    turok.gc_threshold = args.gc_threshold
    runs: list[dict[str, Result]] = []
    try:
        if "turok" in args.receivers:
            turok.start_moto()
        for run in range(args.repeat):
            runs.append(run_once(run, args, payloads, workdir, turok))
    finally:
        turok.close()
    if not args.verbose:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work directory kept: {workdir}")

    print(f"\nmedians of {len(runs)} run(s):")
    print("| receiver | CPU s | pts/CPU-s | wall pts/s | delivered |")
    print("|---|---|---|---|---|")
    for receiver in runs[0]:
        rows = [run[receiver] for run in runs]
        print(f"| {rows[0].receiver} | {median([r.cpu for r in rows]):.2f} "
              f"| {human(median([r.per_cpu for r in rows]))} "
              f"| {human(median([r.per_wall for r in rows]))} | {median([r.fraction for r in rows]):.2%} |")
    if "turok" in runs[0]:
        for anchor, target in (("carbon-relay", 5.0), ("carbon-c-relay", 2.0), ("carbon-cache", 0.0)):
            if anchor not in runs[0]:
                continue
            cpu_ratio = median([run["turok"].per_cpu / run[anchor].per_cpu for run in runs])
            wall_ratio = median([run["turok"].per_wall / run[anchor].per_wall for run in runs])
            complete = all(run["turok"].fraction >= 1.0 and run[anchor].fraction >= 1.0 for run in runs)
            verdict = "meets" if cpu_ratio >= target and complete else "MISSES"
            each = ", ".join(f"{run['turok'].per_cpu / run[anchor].per_cpu:.2f}x" for run in runs)
            print(f"Turok/{anchor}: {cpu_ratio:.2f}x pts/CPU-s (runs: {each}), {wall_ratio:.2f}x wall pts/s "
                  + (f"(target >= {target:g}x pts/CPU-s, all delivered: {verdict} it)" if target
                     else "(the process Turok's gateway replaces; no target)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
