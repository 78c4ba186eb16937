"""The embedded default stack behind ``make run``, also used by the end-to-end tests.

Starts, each as a real process bound to 127.0.0.1: a moto server as the local AWS endpoint
(unless ``aws_endpoint_url`` already names one), provisions queues and bucket, then
``twistd turok-gateway``, ``twistd turokd``, ``twistd turok-indexer`` and graphite-web (served by
``twistd web --wsgi``) with the Turok finder, each in a session of its own so a Ctrl-C in the
terminal reaches the launcher alone. Ctrl-C, SIGTERM or SIGHUP stops all of it in stages (the
gateway first, so it sends what it holds, then the consumers and graphite-web, then the AWS
endpoint); a second signal during that stop SIGKILLs what is left. If the launcher itself is
killed, the services end anyway (see ``turok_core.dev.reaper``), so the next run finds its ports
free.
"""
from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Callable, Mapping, Optional, TextIO

from turok_core.dev.reaper import ReaperHandle, die_with_parent, kill_group
from turok_core.model.config import SECTION, TurokConfig, load_config
from turok_core.runtime.provision import provision

BIN = Path(sys.executable).parent
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "turok-local", "AWS_SECRET_ACCESS_KEY": "turok-local"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def write_config(config: TurokConfig, path: Path) -> None:
    """Write every setting of ``config`` to an INI file the services read with ``--config``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser[SECTION] = {f.name: str(getattr(config, f.name)) for f in dataclasses.fields(config)}
    with open(path, "w") as handle:
        parser.write(handle)


def prepare_graphite_storage(storage_dir: Path) -> None:
    """What ``turok_core.dev.graphite_settings`` expects in ``$GRAPHITE_STORAGE_DIR``: the log
    directory (graphite's loggers open their files there as it starts) and a random secret key
    made once per install and kept, mode 0600, next to graphite's database."""
    storage_dir = Path(storage_dir)
    (storage_dir / "log" / "webapp").mkdir(parents=True, exist_ok=True)
    path = storage_dir / "secret_key"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not path.read_text().strip():
            raise RuntimeError(f"{path} is empty: delete it, and the next start makes a new key") from None
        return
    with os.fdopen(descriptor, "w") as created:
        created.write(secrets.token_urlsafe(48) + "\n")


def _wait(predicate: Callable[[], bool], timeout: float, what: str, processes: Mapping[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode} while waiting for {what}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class DevStack:
    """The whole Turok stack as child processes, with its logs under ``run_dir``.

    Each service is the leader of its own session and process group; stopping a service signals
    its whole group, so processes it forked end with it. The services end when the process that
    started them exits (the parent-death signal is per thread: start and stop from one thread)."""

    def __init__(self, config: TurokConfig, run_dir: Path, extra_env: Optional[Mapping[str, str]] = None) -> None:
        self.run_dir = Path(run_dir)
        self.own_endpoint = not config.aws_endpoint_url
        if self.own_endpoint:
            config = config.replace(aws_endpoint_url=f"http://127.0.0.1:{config.local_aws_port}")
        # graphite-web's finder asks this stack's own turokd for the slots it holds
        config = config.replace(cache_hosts=f"127.0.0.1:{config.cache_port},127.0.0.1:{config.gateway_cache_port}")
        self.config = config
        self.config_path = self.run_dir / "turok.conf"
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list[BinaryIO] = []
        self._reaper: Optional[ReaperHandle] = None
        env = dict(os.environ)
        if self.own_endpoint:
            for key, value in LOCAL_CREDENTIALS.items():
                env.setdefault(key, value)
            env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env.update(extra_env or {})
        env["TUROK_CONFIG"] = str(self.config_path)
        # the file holds the resolved settings; stale TUROK_* variables must not override it
        for key in [k for k in env if k.startswith("TUROK_") and k != "TUROK_CONFIG"]:
            del env[key]
        env.update({
            "DJANGO_SETTINGS_MODULE": "graphite.settings",
            "GRAPHITE_SETTINGS_MODULE": "turok_core.dev.graphite_settings",
            "GRAPHITE_STORAGE_DIR": str(self.run_dir / "graphite"),
        })
        self.env = env

    @property
    def graphite_url(self) -> str:
        return f"http://{self.config.interface}:{self.config.graphite_port}"

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def _log(self, name: str) -> BinaryIO:
        log = open(self.log_path(name), "ab")
        self._logs.append(log)
        return log

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(argv, env=self.env, stdout=self._log(name), stderr=subprocess.STDOUT,
                                   cwd=self.run_dir, start_new_session=True, preexec_fn=die_with_parent())
        self.processes[name] = process
        if self._reaper is not None:
            self._reaper.watch(process.pid)  # a session leader: its pid is its process group
        return process

    def _twistd(self, name: str, *args: str) -> subprocess.Popen:
        return self._spawn(name, [str(BIN / "twistd"), "-n", "--pidfile=", f"--logfile={self.log_path(name)}",
                                  *args])

    def start(self, timeout: float = 60.0) -> None:
        """Start every part and wait until each is accepting work."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prepare_graphite_storage(Path(self.env["GRAPHITE_STORAGE_DIR"]))
        write_config(self.config, self.config_path)
        if self._reaper is None:
            self._reaper = ReaperHandle(self._log("reaper"))
        if self.own_endpoint:
            self._spawn("moto", [sys.executable, "-m", "turok_core.dev.moto_server", "-H", "127.0.0.1",
                                 "-p", str(self.config.local_aws_port)])
            _wait(lambda: _port_open("127.0.0.1", self.config.local_aws_port), timeout, "the local AWS endpoint",
                  self.processes)
        saved = {k: os.environ.get(k) for k in LOCAL_CREDENTIALS}
        try:  # provisioning runs in this process: give it the same credentials as the children
            for key in LOCAL_CREDENTIALS:
                if self.env.get(key):
                    os.environ[key] = self.env[key]
            provision(self.config)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        config_arg = ["--config", str(self.config_path)]
        self._twistd("turokd", "turokd", *config_arg)
        self._twistd("indexer", "turok-indexer", *config_arg)
        self._twistd("gateway", "turok-gateway", *config_arg)
        migrate = subprocess.run([str(BIN / "django-admin"), "migrate", "--noinput", "-v", "0"],
                                 env=self.env, cwd=self.run_dir, capture_output=True, text=True,
                                 preexec_fn=die_with_parent())
        if migrate.returncode:
            raise RuntimeError(f"graphite-web database migration failed:\n{migrate.stdout}{migrate.stderr}")
        self._twistd("graphite-web", "web", "--wsgi", "graphite.wsgi.application",
                     "--listen", f"tcp:{self.config.graphite_port}:interface={self.config.interface}")
        _wait(lambda: _port_open(self.config.interface, self.config.plaintext_port), timeout,
              "the gateway's plaintext port", self.processes)
        _wait(lambda: urllib.request.urlopen(self.graphite_url + "/metrics/find?query=*", timeout=5).status == 200,
              timeout, "graphite-web", self.processes)

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM the gateway first (it flushes its windows to SQS), then the consumers and
        graphite-web together, then the local AWS endpoint; SIGKILL whatever outlives ``timeout``
        and whatever a stopped service left in its process group."""
        stages = [["gateway"], ["graphite-web", "turokd", "indexer"], ["moto"]]
        codes: dict[str, int] = {}
        try:
            for stage in stages:
                # a service that ended earlier is left alone: its group's number may be reused
                running = {name: self.processes[name] for name in stage
                           if name in self.processes and self.processes[name].poll() is None}
                for process in running.values():
                    kill_group(process.pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                for process in running.values():
                    try:
                        process.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
                    kill_group(process.pid)  # the stragglers, or what it forked
                    process.wait()
                codes.update({name: self.processes[name].returncode for name in stage if name in self.processes})
        finally:  # also when a second signal or an error cut the staged stop short
            self.kill()
            for process in self.processes.values():
                process.wait()
            if self._reaper is not None:
                self._reaper.close()
                self._reaper = None
            for log in self._logs:
                log.close()
            self._logs.clear()
            self.processes.clear()
        return codes

    def kill(self) -> None:
        """SIGKILL every service's process group now (safe from a signal handler)."""
        for process in list(self.processes.values()):
            if process.returncode is None:
                kill_group(process.pid)


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def _say(text: str, stream: Optional[TextIO] = None) -> None:
    """Print, unless the terminal is gone (SIGHUP after it closed): stopping matters more."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except OSError:
        pass


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="turok-dev-stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run"], help="run: start the stack in the foreground")
    parser.add_argument("--config", help="Turok configuration file (INI, section [turok])")
    parser.add_argument("--run-dir", default=".run", help="where logs, config and graphite-web's database go")
    args = parser.parse_args(argv)
    stack = DevStack(load_config(args.config), Path(args.run_dir).resolve())
    # a stack started from a script's background job inherits SIGINT ignored: take it back
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    code = 1
    try:
        stack.start()
        c = stack.config
        _say(f"Turok is running (logs in {stack.run_dir}); Ctrl-C stops it.\n"
             f"  local AWS endpoint  {c.aws_endpoint_url}\n"
             f"  Carbon plaintext    tcp+udp {c.interface}:{c.plaintext_port}\n"
             f"  graphite-web        {stack.graphite_url}\n"
             f"Try (bash and python3 alone, see README.md's quickstart):\n"
             f"  echo \"demo.hello 42 $(date +%s)\" > /dev/tcp/{c.interface}/{c.plaintext_port}\n"
             f"  python3 -c 'import urllib.request as u; print(u.urlopen(\"{stack.graphite_url}"
             f"/render?target=demo.hello&from=-5min&format=json\").read().decode())'")
        while all(p.poll() is None for p in stack.processes.values()):
            time.sleep(1)
        dead = [n for n, p in stack.processes.items() if p.poll() is not None]
        _say(f"stopping: {', '.join(dead)} exited; see its log in {stack.run_dir}", sys.stderr)
    except KeyboardInterrupt:
        _say("stopping Turok")
        code = 0
    finally:
        try:
            # a signal during the staged stop must not cut it short and leave services behind:
            # it means "now", and the stop ends at once with everything SIGKILLed
            for signum in STOP_SIGNALS:
                signal.signal(signum, lambda signum, frame: stack.kill())
        finally:  # even if a signal came before the new handlers were in place
            stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
