"""The Turok pipeline as real processes for the whole-path benchmarks (pipeline, late data, scale).

``TurokProcesses`` starts a moto server, provisions Turok's queues and bucket on it under names of
its own, and runs ``twistd -n turok-gateway``, ``twistd -n turokd`` (one or more, on the same
queues) and ``twistd -n turok-indexer`` from this checkout (PYTHONPATH=repo), all bound to
127.0.0.1, with self-metrics off so every stored point is one the benchmark sent. What it reads
back is what any operator can read, not turokd's internals, so it keeps working while the write
path changes: CPU and RSS from /proc, queue depths from SQS, stored items from scanning the day
tables, slot values through ``BlockStore.fetch_series``, held slots over turokd's cache query
port, and turokd's own counters from the ``turokd counters: {…}`` line it logs every minute and
when it stops. Every process it started is stopped by ``close`` (the gateway first, so it sends
what it holds; then turokd and the indexer, which write what they hold; then moto).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from common import REPO, TICK, VENV_BIN, cpu_seconds, free_port, moto_command, moto_env, stop, wait_port

from turok_core.dev.stack import write_config
from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import make_client
from turok_core.runtime.provision import provision
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.table_names import parse_table_name

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def config_fields() -> set[str]:
    return {field.name for field in dataclasses.fields(TurokConfig)}


def attribute_size(value: dict) -> int:
    """Bytes DynamoDB counts for one attribute value (its item-size rules, nested types roughly)."""
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return len(inner.encode())
    if kind == "B":
        return len(inner)
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: item}) for item in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_size(item) for item in inner)
    if kind == "M":
        return 3 + sum(1 + len(key.encode()) + attribute_size(item) for key, item in inner.items())
    return 1  # BOOL, NULL


def item_size(item: dict) -> int:
    """Bytes of one DynamoDB item as billed: attribute names plus values."""
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def metric_names(count: int) -> list[str]:
    """``count`` names, 10 per host: ``bench.h00042.cpu.m3``."""
    return [f"bench.h{index // 10:05d}.cpu.m{index % 10}" for index in range(count)]


def value_text(index: int, slot: int) -> str:
    """The value metric ``index`` gets in slot number ``slot``: a short decimal, as gauges are."""
    return f"{(index * 7 + slot) % 1000}.{slot % 10}"


def slot_lines(names: list[str], slot: int, stamp: int, connections: int) -> list[bytes]:
    """One payload per connection with one point of each name stamped ``stamp``; a host's
    names always go over the same connection."""
    parts: list[list[str]] = [[] for _ in range(connections)]
    for index, name in enumerate(names):
        parts[(index // 10) % connections].append(f"{name} {value_text(index, slot)} {stamp}\n")
    return ["".join(part).encode() for part in parts]


def send_lines(payloads: list[bytes], port: int, timeout: float = 60.0) -> None:
    """Send each payload over a connection of its own to 127.0.0.1:port (one after the other)."""
    import socket
    for payload in payloads:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(payload)


class TurokProcesses:
    """moto + provisioning + the Turok services as child processes, under ``workdir``.

    ``settings``: TurokConfig fields to set (those this checkout's TurokConfig lacks, e.g.
    ``queue_partitions`` before partitions exist, are left out and listed in ``ignored``)."""

    def __init__(self, workdir: Path, settings: Optional[dict[str, Any]] = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.moto: Optional[subprocess.Popen] = None
        self.processes: dict[str, subprocess.Popen] = {}  # "gateway", "indexer", "turokd-0", …
        self.cache_ports: dict[str, int] = {}
        wanted = dict(settings or {})
        known = config_fields()
        self.ignored = sorted(key for key in wanted if key not in known)
        self._settings = {key: value for key, value in wanted.items() if key in known}
        self.config: Optional[TurokConfig] = None
        self._env: dict[str, str] = {}

    # --- start -----------------------------------------------------------------------------
    def start_moto(self) -> None:
        port = free_port()
        self.moto = subprocess.Popen(moto_command(port), env=moto_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, 30, self.moto)
        self.endpoint = f"http://127.0.0.1:{port}"
        for key, value in CREDENTIALS.items():
            os.environ.setdefault(key, value)

    def provision(self) -> TurokConfig:
        """A fresh set of queues, bucket and table prefix on the moto server; the config file."""
        if self.moto is None:
            self.start_moto()
        tag = uuid.uuid4().hex[:6]
        config = TurokConfig(
            aws_endpoint_url=self.endpoint, aws_region="us-east-1",
            queue_name=f"bm{tag}", index_queue_name=f"bi{tag}", dead_letter_queue_name=f"bdlq{tag}",
            index_bucket=f"bench-{tag}", table_prefix=f"b{tag}", interface="127.0.0.1",
            plaintext_port=free_port(), plaintext_udp_port=free_port(), pickle_port=free_port(),
            statsd_port=free_port(), gateway_cache_port=free_port(), cache_port=free_port(),
            spool_dir=str(self.workdir / f"spool-{tag}"), self_metrics_interval_seconds=0, cache_hosts="")
        config = config.replace(**self._settings)
        provision(config)
        self.config = config
        self.config_path = self.workdir / f"turok-{tag}.conf"
        write_config(config, self.config_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUROK_")}
        env.update(CREDENTIALS, PYTHONPATH=str(REPO))
        self._env = env
        self.sqs = make_client("sqs", config)
        self.dynamodb = make_client("dynamodb", config)
        return config

    def _twistd(self, name: str, plugin: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        process = subprocess.Popen([str(VENV_BIN / "twistd"), "-n", "--pidfile=", f"--logfile={log}", plugin,
                                    "--config", str(self.config_path)], env={**self._env, **(env or {})},
                                   cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes[name] = process
        return process

    def start_turokd(self, number: int) -> str:
        """Start turokd number ``number`` (its own cache port and agent name); returns its name."""
        name = f"turokd-{number}"
        port = free_port()
        process = self._twistd(name, "turokd", {"TUROK_CACHE_PORT": str(port), "TUROK_AGENT_NAME": name})
        self.cache_ports[name] = port
        wait_port(port, 60, process)
        return name

    def start(self, turokds: int = 1, gateway: bool = True, indexer: bool = True) -> None:
        """Provision (unless done) and start the services; returns once each accepts work."""
        if self.config is None:
            self.provision()
        assert self.config is not None
        for number in range(turokds):
            self.start_turokd(number)
        if indexer:
            self._twistd("indexer", "turok-indexer")
        if gateway:
            wait_port(self.config.plaintext_port, 60, self._twistd("gateway", "turok-gateway"))
        time.sleep(1.5)  # start-up work (queue look-ups, thread pools) is not what is measured
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.workdir / name}.log")

    @property
    def turokds(self) -> list[str]:
        return sorted(name for name in self.processes if name.startswith("turokd-"))

    def pids(self) -> dict[str, int]:
        """Every running service's pid, and moto's."""
        pids = {name: process.pid for name, process in self.processes.items() if process.poll() is None}
        if self.moto is not None:
            pids["moto"] = self.moto.pid
        return pids

    # --- what can be read from outside -----------------------------------------------------
    def metric_queue_urls(self) -> list[str]:
        """The metrics queue(s): ``queue_name`` and any partition queues named after it, no dead letters."""
        assert self.config is not None
        urls = self.sqs.list_queues(QueueNamePrefix=self.config.queue_name).get("QueueUrls", [])
        return [url for url in urls if "dlq" not in url.rsplit("/", 1)[-1]]

    def wait_leases_settled(self, timeout: float = 90.0) -> float:
        """Wait until the partitions are shared out as they will stay (each turokd its fair share,
        every lease live), as the lease table shows it; returns the seconds waited.

        turokd processes started together first take what is free, then rebalance on their
        heartbeats: traffic sent meanwhile sees partitions move, which a steady state does not.
        """
        from turok_core.storage.leases import LeaseTable

        assert self.config is not None
        table = LeaseTable(make_client("dynamodb", self.config), self.config.lease_table_name)
        partitions = max(1, self.config.queue_partitions)
        owners_wanted = min(len(self.turokds), partitions)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            now = time.time()
            view = table.read()
            held: dict[str, int] = {}
            for lease in view.leases.values():
                if not lease.free_at(now):
                    held[lease.owner] = held.get(lease.owner, 0) + 1
            if sum(held.values()) == partitions and len(held) == owners_wanted \
                    and max(held.values()) - min(held.values()) <= 1:
                return time.monotonic() - t0
            time.sleep(0.5)
        raise RuntimeError(f"the leases did not settle within {timeout:.0f} s")

    def backlog(self) -> int:
        """Messages on the metrics and index queues, visible, in flight or delayed (0: all stored)."""
        assert self.config is not None
        total = 0
        index_url = self.sqs.get_queue_url(QueueName=self.config.index_queue_name)["QueueUrl"]
        for url in self.metric_queue_urls() + [index_url]:
            attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            total += sum(int(attributes.get(key, 0)) for key in (
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"))
        return total

    def metric_queue_counts(self) -> dict[str, tuple[int, int]]:
        """Per metrics queue: (messages waiting to be received, messages in flight: received and
        not deleted, which turokd holds while their blocks are open; SQS caps them per queue)."""
        counts = {}
        for url in self.metric_queue_urls():
            attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            counts[url.rsplit("/", 1)[-1]] = (int(attributes.get("ApproximateNumberOfMessages", 0)),
                                              int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)))
        return counts

    def stored(self) -> dict[int, tuple[int, int, int]]:
        """``{step: (items, bytes, write units)}`` over every day table of this run (a scan of
        each); the units are what writing each item once costs (1 KB each, rounded up)."""
        assert self.config is not None
        prefix, joiner = self.config.table_prefix, self.config.table_joiner
        names: list[str] = []
        for page in self.dynamodb.get_paginator("list_tables").paginate():
            names.extend(name for name in page["TableNames"] if name.startswith(prefix + joiner))
        result: dict[int, tuple[int, int, int]] = {}
        for name in names:
            parsed = parse_table_name(name, prefix, joiner)
            if parsed is None:
                continue
            items, size, units = result.get(parsed.step, (0, 0, 0))
            for page in self.dynamodb.get_paginator("scan").paginate(TableName=name):
                sizes = [item_size(item) for item in page["Items"] if item["metric"]["S"] != RECORD_METRIC]
                items += len(sizes)
                size += sum(sizes)
                units += sum(-(-each // 1024) for each in sizes)
            result[parsed.step] = (items, size, units)
        return result

    def fetch_series(self, metrics: list[str], step: int, start: int, end: int) -> dict[str, list]:
        """Stored slot values, read the way the finder reads them (``BlockStore.fetch_series``)."""
        from turok_core.storage.tables import BlockStore
        assert self.config is not None
        store = BlockStore(self.dynamodb, self.config)
        series: dict[str, list] = {}
        for first in range(0, len(metrics), 1000):
            series.update(store.fetch_series(metrics[first:first + 1000], step, start, end))
        return series

    def held_metrics(self, name: str, metrics: list[str], start: float, until: float) -> int:
        """How many of ``metrics`` turokd ``name`` holds slots of in memory (its cache query)."""
        body = json.dumps({"metrics": metrics, "from": start, "until": until}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.cache_ports[name]}/cache", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        return sum(1 for steps in answer.values() if any(steps.values()))

    def log_lines(self, name: str, marker: str) -> list[str]:
        """The lines of service ``name``'s log that contain ``marker``."""
        try:
            with open(self.workdir / f"{name}.log", errors="replace") as handle:
                return [line for line in handle if marker in line]
        except OSError:
            return []

    def counters(self, name: str) -> dict[str, float]:
        """The last ``<service> counters: {…}`` line a service logged ({} if none yet)."""
        found: dict[str, float] = {}
        try:
            with open(self.workdir / f"{name}.log", errors="replace") as handle:
                for line in handle:
                    marker = line.find(" counters: {")
                    if marker >= 0:
                        try:
                            found = ast.literal_eval(line[marker + len(" counters: "):].strip())
                        except (ValueError, SyntaxError):
                            pass
        except OSError:
            pass
        return found

    # --- stop ------------------------------------------------------------------------------
    def stop_services(self, names: Optional[list[str]] = None, timeout: float = 120.0) -> dict[str, Optional[int]]:
        """SIGTERM the named services (all: the gateway first, then the rest) and wait for them
        (SIGKILL past ``timeout``); their exit codes (0: a clean stop, its writes done)."""
        order = names or (["gateway"] + [n for n in self.processes if n != "gateway"])
        codes: dict[str, Optional[int]] = {}
        for name in order:
            if name in self.processes:
                stop(self.processes[name], timeout)
                codes[name] = self.processes[name].returncode
        return codes

    def stop_together(self, names: list[str], timeout: float) -> dict[str, Optional[int]]:
        """SIGTERM the named services at once (as a fleet is stopped), then wait for each; exit codes."""
        running = [self.processes[name] for name in names if self.processes[name].poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return {name: self.processes[name].returncode for name in names}

    def close(self) -> None:
        try:
            self.stop_services()
        finally:
            for process in self.processes.values():
                stop(process, 5)
            stop(self.moto)
            self.moto = None


def wait_idle(pids: dict[str, int], done: Callable[[], bool], timeout: float, idle_seconds: float = 1.5,
              sample: float = 0.25, busy_ticks: int = 2) -> tuple[dict[str, float], float, bool]:
    """Sample the CPU of every pid until ``done()`` holds and none rose by more than ``busy_ticks``
    clock ticks for ``idle_seconds``; (CPU seconds of each then, monotonic time, finished).

    ``busy_ticks``: idle services still tick (turokd looks for closed blocks every second)."""
    slack = busy_ticks / TICK + 1e-9
    start = time.monotonic()
    base = {name: cpu_seconds(pid) for name, pid in pids.items()}
    last_rise = start
    while time.monotonic() - start < timeout:
        time.sleep(sample)
        now = time.monotonic()
        current = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if any(current[name] - base[name] > slack for name in pids):
            base, last_rise = current, now
        elif now - last_rise >= idle_seconds and done():
            return current, now, True
    return {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic(), False
