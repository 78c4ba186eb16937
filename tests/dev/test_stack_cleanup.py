"""The local stack leaves nothing behind: however its launcher ends (SIGHUP to ``make run``'s
process group, SIGKILL of the launcher alone, SIGTERM again during its staged stop), every
process it started ends within a minute, its ports are free, and the next launch on the same
ports starts."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_for
from turok_core.dev.reaper import group_alive, reap

pytestmark = pytest.mark.processes

PORTS = ("PLAINTEXT_PORT", "PLAINTEXT_UDP_PORT", "PICKLE_PORT", "STATSD_PORT", "LOCAL_AWS_PORT",
         "GRAPHITE_PORT", "CACHE_PORT", "GATEWAY_CACHE_PORT")
UDP_PORTS = {"PLAINTEXT_UDP_PORT", "STATSD_PORT"}
GONE_WITHIN = 60.0  # what the launcher promises
START_WITHIN = 150.0  # a cold start on a loaded two-core machine


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat from the state on: [state, ppid, pgrp, session, …]."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def _processes() -> dict[int, list[str]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found[int(entry)] = _stat(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass  # ended while we looked
    return found


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except FileNotFoundError:
        return "?"


def sessions_started_by(launcher: int) -> dict[int, str]:
    """The launcher's children (each leads a session of its own) and their command lines."""
    return {pid: _command(pid) for pid, stat in _processes().items() if int(stat[1]) == launcher}


def alive_in(sessions) -> dict[int, str]:
    """Every live process, grandchildren included, in one of ``sessions`` (zombies hold nothing)."""
    return {pid: _command(pid) for pid, stat in _processes().items()
            if int(stat[3]) in sessions and stat[0] != "Z"}


def port_free(port: int, udp: bool) -> bool:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def launch(run_dir: Path, ports: dict[str, int], output: Path) -> subprocess.Popen:
    """``make run``'s command, in a process group of its own as in a terminal; returns once it
    printed its banner."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUROK_WINDOW_GRACE_SECONDS": "1",
           "TUROK_RECEIVE_WAIT_SECONDS": "1", "TUROK_INDEX_REFRESH_SECONDS": "0.5",
           **{f"TUROK_{name}": str(port) for name, port in ports.items()}}
    env.pop("TUROK_CONFIG", None)
    with open(output, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "turok_core.dev.stack", "run", "--run-dir", str(run_dir)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: process.poll() is not None or "Ctrl-C" in output.read_text(), START_WITHIN,
             "the stack's banner", interval=0.5)
    assert process.poll() is None, output.read_text()
    return process


def stop(launcher: subprocess.Popen, sessions) -> None:
    """Ctrl-C, bounded; then SIGKILL whatever is left of anything it started."""
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(GONE_WITHIN)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait(10)
    for pid in alive_in(sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("end", ["sighup-to-group", "sigkill-to-launcher", "sigterm-during-its-stop"])
def test_nothing_outlives_the_launcher_and_the_next_launch_starts(tmp_path, end):
    ports = {name: free_port() for name in PORTS}
    run_dir = tmp_path / "run"
    started: list[tuple[subprocess.Popen, dict[int, str]]] = []
    try:
        first = launch(run_dir, ports, tmp_path / "first.out")
        sessions = sessions_started_by(first.pid)
        started.append((first, sessions))
        commands = " | ".join(sessions.values())
        assert len(sessions) == 6, commands  # moto, turokd, the indexer, the gateway, graphite-web, the reaper
        for name in ("moto_server", "turokd", "turok-indexer", "turok-gateway", "graphite.wsgi", "reaper.py"):
            assert name in commands, commands

        if end == "sighup-to-group":  # the terminal closed
            os.killpg(first.pid, signal.SIGHUP)
        elif end == "sigkill-to-launcher":
            os.kill(first.pid, signal.SIGKILL)
        else:  # an impatient supervisor: the second signal means now
            os.kill(first.pid, signal.SIGTERM)
            time.sleep(0.5)
            os.kill(first.pid, signal.SIGTERM)
        wait_for(lambda: not alive_in(sessions), GONE_WITHIN, "every process the launcher started to end",
                 interval=0.5)
        assert first.wait(10) == (-signal.SIGKILL if end == "sigkill-to-launcher" else 0)
        busy = [name for name, port in ports.items() if not port_free(port, name in UDP_PORTS)]
        assert busy == []

        second = launch(run_dir, ports, tmp_path / "second.out")
        started.append((second, sessions_started_by(second.pid)))
        assert "Turok is running" in (tmp_path / "second.out").read_text()
    finally:
        for launcher, sessions in reversed(started):
            stop(launcher, sessions)
    assert all(not alive_in(sessions) for _, sessions in started)


def test_a_service_ends_when_its_launcher_is_killed(tmp_path):
    """The parent-death signal: the launcher runs no code of its own when SIGKILLed."""
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from turok_core.dev.reaper import die_with_parent
        child = subprocess.Popen(["sleep", "600"], start_new_session=True, preexec_fn=die_with_parent())
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(launcher.stdout.readline())
        launcher.kill()
        launcher.wait(10)
        wait_for(lambda: child not in alive_in({child}), 10, "the service to get SIGTERM")
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if child is not None and alive_in({child}):
            os.kill(child, signal.SIGKILL)
        launcher.stdout.close()


def test_the_reaper_kills_what_is_left_of_a_group_including_what_a_service_forked():
    service = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"], start_new_session=True)
    try:
        assert reap(io.StringIO(f"{service.pid}\n"), grace=0.5) == [service.pid]
        assert service.wait(10) == -signal.SIGKILL
        wait_for(lambda: not alive_in({service.pid}), 10, "the forked sleep to end too")
        wait_for(lambda: not group_alive(service.pid), 30, "init to reap the forked sleep")
        assert reap(io.StringIO(f"{service.pid}\n"), grace=0.5) == []  # an ended group is left alone
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(10)
