"""Shared helpers of the benchmarks: ports, process CPU from /proc, idle detection, medians."""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
# the checkout's turok_core, not a copy `make install` put in site-packages: the gateways the
# benchmarks start run the checkout (PYTHONPATH), and decoding their bodies must match it
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# the checkout's venv, else the one running the benchmark (a worktree without a .venv of its own)
VENV_BIN = REPO / ".venv" / "bin" if (REPO / ".venv" / "bin").is_dir() else Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


def moto_command(port: int) -> list[str]:
    """The command of a moto server on 127.0.0.1:``port`` with conditional writes as atomic as
    AWS's (turok_core/dev/moto_server.py; moto's own server can lose a conditional write under load)."""
    return [str(VENV_BIN / "python"), "-m", "turok_core.dev.moto_server", "-H", "127.0.0.1", "-p", str(port)]


def moto_env() -> dict[str, str]:
    """The environment ``moto_command`` runs in: the checkout's turok_core first."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float, process: Optional[subprocess.Popen] = None) -> None:
    """Wait until 127.0.0.1:port accepts connections (or the process dies, or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args[:3]} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def start_moto() -> tuple[subprocess.Popen, int]:
    """A moto server on a free 127.0.0.1 port, up and answering: (its process, its port)."""
    port = free_port()
    process = subprocess.Popen(moto_command(port), env=moto_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30, process)
    except BaseException:
        stop(process)
        raise
    return process, port


def index_bench_config(port: int, bucket: str, tag_shards: int, **extra: str):
    """The Turok config of an index benchmark on the moto at ``port`` (a bucket of its own, no
    background refresh), with the AWS credentials moto takes in this process's environment."""
    from turok_core.model.config import load_config
    env = {"TUROK_AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "TUROK_AWS_REGION": "us-east-1",
           "TUROK_INDEX_BUCKET": bucket, "TUROK_INDEX_REFRESH_SECONDS": "3600",
           "TUROK_TAG_INDEX_SHARDS": str(tag_shards), **extra}
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    return load_config(environ=env)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process in bytes (/proc/<pid>/status VmRSS)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_cpu_settled(pid: int, t0: float, done: Callable[[], bool], timeout: float,
                     idle_seconds: float = 1.0, sample: float = 0.05) -> tuple[float, float, bool]:
    """Sample the CPU of ``pid`` until ``done()`` holds and it has not risen by more than one
    clock tick for ``idle_seconds`` (or ``timeout`` from t0 passes).

    Returns (cpu seconds at the end, monotonic time the CPU reached that value, finished)."""
    slack = 1.0 / TICK + 1e-9
    last_cpu = cpu_seconds(pid)
    last_rise = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        time.sleep(sample)
        now = time.monotonic()
        cpu = cpu_seconds(pid)
        if cpu - last_cpu > slack:
            last_cpu, last_rise = cpu, now
        elif now - last_rise >= idle_seconds and done():
            return last_cpu, last_rise, True
    return cpu_seconds(pid), time.monotonic(), False


def stop(process: Optional[subprocess.Popen], timeout: float = 15.0) -> None:
    """SIGTERM a process this benchmark started, SIGKILL it if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def human(value: float) -> str:
    """1234567 → '1.23M', 98765 → '98.8k'."""
    if value != value:
        return "n/a"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def machine() -> str:
    """nproc, arch and CPU model, for the tables."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU, {os.uname().machine}, {model}"
