"""What `make run` runs, as a user runs it: the stack from the environment's ports, then Ctrl-C."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, VENV_BIN, free_port, wait_for
from tests.e2e.conftest import graphite_get

pytestmark = pytest.mark.processes


def test_twistd_lists_the_turok_plugins():
    result = subprocess.run([str(VENV_BIN / "twistd"), "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    for plugin in ("turok-gateway", "turokd", "turok-indexer"):
        assert f"    {plugin} " in result.stdout, plugin


def test_stack_run_takes_ports_from_the_environment_and_stops_on_ctrl_c(tmp_path):
    ports = {name: free_port() for name in ("PLAINTEXT_PORT", "PLAINTEXT_UDP_PORT", "PICKLE_PORT", "STATSD_PORT",
                                            "LOCAL_AWS_PORT",
                                            "GRAPHITE_PORT", "CACHE_PORT",
                                            "GATEWAY_CACHE_PORT")}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUROK_WINDOW_GRACE_SECONDS": "1",
           "TUROK_RECEIVE_WAIT_SECONDS": "1", "TUROK_INDEX_REFRESH_SECONDS": "0.5",
           **{f"TUROK_{name}": str(port) for name, port in ports.items()}}
    env.pop("TUROK_CONFIG", None)
    process = subprocess.Popen([sys.executable, "-m", "turok_core.dev.stack", "run",
                                "--run-dir", str(tmp_path)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        banner = wait_for(lambda: (lambda line: line if "Ctrl-C" in line or process.poll() is not None else None)(
            process.stdout.readline()), 120, "the stack's banner")
        assert "Turok is running" in banner, banner
        with socket.create_connection(("127.0.0.1", ports["PLAINTEXT_PORT"]), timeout=10) as sock:
            sock.sendall(b"cli.hello 42 -1\n")  # -1: stamped with the gateway's clock

        class Stack:  # what graphite_get needs
            graphite_url = f"http://127.0.0.1:{ports['GRAPHITE_PORT']}"

        def rendered():
            series = graphite_get(Stack, "/render", target="cli.hello", format="json", **{"from": "-5min"})
            return [p for s in series for p in s["datapoints"] if p[0] is not None]

        (value, _), = wait_for(rendered, 60, "the point in graphite-web", interval=0.5)
        assert value == 42.0
        children = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
        assert len(children) == 5  # the launcher and four twistd processes (moto's argv names no path)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert code == 0
    assert "stopping Turok" in process.stdout.read()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []
    for name in ("LOCAL_AWS_PORT", "PLAINTEXT_PORT", "GRAPHITE_PORT"):  # moto is gone too
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", ports[name])) != 0, name
