"""A real collectd (Debian collectd-core) with write_graphite over TCP into the gateway's plaintext port."""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import graphite_get

COLLECTD = Path("/usr/sbin/collectd")
PLUGIN_DIR = Path("/usr/lib/collectd")
TYPES_DB = Path("/usr/share/collectd/types.db")
HOSTNAME = "turok-e2e.example"  # write_graphite turns the dot into "_"
NODE = "turok-e2e_example"


def collectd_conf(run_dir: Path, port: int) -> str:
    """Only the cpu and load plugins, reported every second to the gateway; no other network plugin."""
    return f"""Hostname "{HOSTNAME}"
FQDNLookup false
Interval 1
BaseDir "{run_dir}"
PIDFile "{run_dir}/collectd.pid"
PluginDir "{PLUGIN_DIR}"
TypesDB "{TYPES_DB}"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File STDOUT
  Timestamp true
</Plugin>
LoadPlugin cpu
LoadPlugin load
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "turok">
    Host "127.0.0.1"
    Port "{port}"
    Protocol "tcp"
    Prefix "collectd."
    LogSendErrors true
  </Node>
</Plugin>
"""


@pytest.fixture
def collectd(stack, tmp_path):
    """collectd -f running against the session stack's gateway; stopped (bounded) afterwards."""
    assert COLLECTD.exists(), "collectd-core is not installed (make test installs it with apt-get)"
    conf = tmp_path / "collectd.conf"
    conf.write_text(collectd_conf(tmp_path, stack.config.plaintext_port))
    log = open(tmp_path / "collectd.log", "wb")
    process = subprocess.Popen([str(COLLECTD), "-f", "-C", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                               cwd=tmp_path, start_new_session=True)
    try:
        yield process, tmp_path / "collectd.log"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def values(stack, target: str) -> dict[str, list[float]]:
    rendered = graphite_get(stack, "/render", target=target, format="json", **{"from": "-5min"})
    return {s["target"]: [v for v, _ in s["datapoints"] if v is not None] for s in rendered}


def test_collectd_cpu_and_load_reach_graphite_web(stack, collectd):
    process, log_path = collectd

    def found(query: str) -> set[str]:
        assert process.poll() is None, f"collectd exited {process.returncode}: {log_path.read_text()}"
        return {n["text"] for n in graphite_get(stack, "/metrics/find", query=query)}

    # the names write_graphite uses: collectd.<host>.load.load.{shortterm,midterm,longterm} and
    # collectd.<host>.cpu-<n>.cpu-<state>
    wait_for(lambda: found(f"collectd.{NODE}.load.load.*") == {"shortterm", "midterm", "longterm"}, 45,
             "collectd's load metrics in /metrics/find", interval=0.5)
    wait_for(lambda: "cpu-0" in found(f"collectd.{NODE}.*"), 20, "collectd's cpu-0 node", interval=0.5)
    wait_for(lambda: {"cpu-user", "cpu-system", "cpu-idle"} <= found(f"collectd.{NODE}.cpu-0.*"), 20,
             "cpu-0's user, system and idle states", interval=0.5)

    load = wait_for(lambda: values(stack, f"collectd.{NODE}.load.load.shortterm").get(
        f"collectd.{NODE}.load.load.shortterm"), 30, "load values in the render API", interval=0.5)
    assert all(math.isfinite(v) and 0 <= v < 10_000 for v in load)
    # cpu values are rates (jiffies per second): the first reading is NaN (dropped), later ones numbers
    numbers = wait_for(lambda: [v for series in values(stack, f"collectd.{NODE}.cpu-*.cpu-idle").values()
                                for v in series], 30, "cpu idle values", interval=0.5)
    assert all(math.isfinite(v) and v >= 0 for v in numbers)
    assert process.poll() is None
