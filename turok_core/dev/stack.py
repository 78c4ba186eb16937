"""The embedded default stack behind ``make run``, also used by the end-to-end tests.

Starts, each as a real process bound to 127.0.0.1: a moto server as the local AWS endpoint
(unless ``aws_endpoint_url`` already names one), provisions queues and bucket, then
``twistd turok-gateway``, ``twistd turokd``, ``twistd turok-indexer`` and graphite-web (served by
``twistd web --wsgi``) with the Turok finder. Ctrl-C (or SIGTERM) stops all of it.
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
from typing import Mapping, Optional

from turok_core.model.config import SECTION, TurokConfig, load_config
from turok_core.runtime.provision import provision

BIN = Path(sys.executable).parent
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "turok-local", "AWS_SECRET_ACCESS_KEY": "turok-local"}


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


def _wait(predicate, timeout: float, what: str, processes: Mapping[str, subprocess.Popen]) -> None:
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


class LocalStack:
    """The whole Turok stack as child processes, with its logs under ``run_dir``."""

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
        self._logs: list = []
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

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_path(name), "ab")
        self._logs.append(log)
        process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=self.run_dir, start_new_session=True)
        self.processes[name] = process
        return process

    def _twistd(self, name: str, *args: str) -> subprocess.Popen:
        return self._spawn(name, [str(BIN / "twistd"), "-n", "--pidfile=", f"--logfile={self.log_path(name)}",
                                  *args])

    def start(self, timeout: float = 60.0) -> None:
        """Start every part and wait until each is accepting work."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prepare_graphite_storage(Path(self.env["GRAPHITE_STORAGE_DIR"]))
        write_config(self.config, self.config_path)
        if self.own_endpoint:
            self._spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.config.local_aws_port)])
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
                                 env=self.env, cwd=self.run_dir, capture_output=True, text=True)
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
        graphite-web together, then the local AWS endpoint; SIGKILL whatever outlives ``timeout``."""
        stages = [["gateway"], ["graphite-web", "turokd", "indexer"], ["moto"]]
        codes: dict[str, int] = {}
        for stage in stages:
            running = [self.processes[name] for name in stage if name in self.processes]
            for process in running:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for name, process in zip([n for n in stage if n in self.processes], running):
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                codes[name] = process.returncode
        for log in self._logs:
            log.close()
        self.processes.clear()
        return codes


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="turok-localstack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run"], help="run: start the stack in the foreground")
    parser.add_argument("--config", help="Turok configuration file (INI, section [turok])")
    parser.add_argument("--run-dir", default=".run", help="where logs, config and graphite-web's database go")
    args = parser.parse_args(argv)
    stack = LocalStack(load_config(args.config), Path(args.run_dir).resolve())
    # a stack started from a script's background job inherits SIGINT ignored: take it back
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        c = stack.config
        print(f"Turok is running (logs in {stack.run_dir}); Ctrl-C stops it.\n"
              f"  local AWS endpoint  {c.aws_endpoint_url}\n"
              f"  Carbon plaintext    tcp+udp {c.interface}:{c.plaintext_port}\n"
              f"  graphite-web        {stack.graphite_url}\n"
              f"Try:  echo \"demo.hello 42 $(date +%s)\" | nc -q0 {c.interface} {c.plaintext_port}\n"
              f"      curl '{stack.graphite_url}/render?target=demo.hello&from=-5min&format=json'", flush=True)
        while all(p.poll() is None for p in stack.processes.values()):
            time.sleep(1)
        dead = [n for n, p in stack.processes.items() if p.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited; see its log in {stack.run_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Turok", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
