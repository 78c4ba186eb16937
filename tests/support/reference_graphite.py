"""Real graphite-web processes for tests: a second one with its stock TagDB (``LocalDatabaseTagDB``
on sqlite), the reference Turok's tag answers are judged against
(tests/support/graphite_reference_settings.py), and one with Turok's finder and TagDB on a test's
own configuration (``turok_graphite``), beside processes the test starts itself."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from tests.conftest import ROOT, VENV_BIN, free_port, wait_for
from turok_core.dev.reaper import kill_group
from turok_core.dev.stack import prepare_graphite_storage, write_config
from turok_core.model.config import TurokConfig


@contextmanager
def reference_graphite(workdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """Start it (``twistd web --wsgi`` on a free loopback port), yield its URL, stop it."""
    with serving_graphite(workdir, {"GRAPHITE_SETTINGS_MODULE": "tests.support.graphite_reference_settings"},
                          "the reference graphite-web", timeout=timeout) as url:
        yield url


@contextmanager
def turok_graphite(workdir: Path, config: TurokConfig, timeout: float = 60.0) -> Iterator[str]:
    """graphite-web with Turok's settings (``finder.TurokFinder``, ``finder.TurokTagDB``) reading
    ``config``'s index (written to ``workdir/turok.ini``); yields its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(config, workdir / "turok.ini")
    with serving_graphite(workdir, {"GRAPHITE_SETTINGS_MODULE": "turok_core.dev.graphite_settings",
                                    "TUROK_CONFIG": str(workdir / "turok.ini")},
                          "graphite-web on Turok", timeout=timeout) as url:
        yield url


@contextmanager
def serving_graphite(workdir: Path, settings: Mapping[str, str], what: str, timeout: float = 60.0) -> Iterator[str]:
    """graphite-web (``twistd web --wsgi`` on a free loopback port) with ``settings`` in its
    environment and its storage (its database migrated) in ``workdir/graphite``; yields its URL
    and stops it (its whole process group) on exit."""
    storage = workdir / "graphite"
    prepare_graphite_storage(storage)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUROK_")}
    env.update(PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="graphite.settings", GRAPHITE_STORAGE_DIR=str(storage))
    env.update(settings)
    migrated = subprocess.run([str(VENV_BIN / "django-admin"), "migrate", "--noinput", "-v", "0"], env=env,
                              cwd=workdir, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    port = free_port()
    log = workdir / "graphite-web.log"
    process = subprocess.Popen([str(VENV_BIN / "twistd"), "-n", "--pidfile=", f"--logfile={log}", "web", "--wsgi",
                                "graphite.wsgi.application", "--listen", f"tcp:{port}:interface=127.0.0.1"],
                               env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        assert process.poll() is None, f"{what} exited {process.returncode}"
        try:
            return urllib.request.urlopen(url + "/tags", timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(serving, timeout, what)
        yield url
    finally:
        if process.poll() is None:
            kill_group(process.pid, 15)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                kill_group(process.pid)
                process.wait(5)


def call(url: str, path: str, params=(), post: bool = False) -> tuple[int, object]:
    """(status, decoded JSON body) of a graphite-web API call; ``params`` a list of pairs."""
    query = urllib.parse.urlencode(list(params), doseq=True)
    request = (urllib.request.Request(url + path, data=query.encode(), method="POST") if post
               else urllib.request.Request(f"{url}{path}?{query}"))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, body.decode("utf-8", "replace")
