"""The shell blocks of README.md and docs/*.md, run as written against the local stack.

Convention (stated for readers at the top of docs/architecture.md): a fenced ```` ```sh ```` block
is meant to run, from a checkout, with ``make run`` going; ```` ```console ```` blocks (``make
run`` and ``make test`` themselves, which run this test, and commands that change the checkout)
and ```` ```text ````/```` ```ini ````/```` ```python ````/```` ```json ```` blocks are shown only.

Each page's ``sh`` blocks run in page order, each in its own ``bash -e -o pipefail`` within
``BLOCK_TIMEOUT``, from a scratch directory, and must exit 0. Before a block runs, what names
``make run``'s stack is pointed at the ``stack`` fixture's:

- ``127.0.0.1:PORT``, ``/dev/tcp/127.0.0.1/PORT``, ``/dev/udp/127.0.0.1/PORT`` and
  ``("127.0.0.1", PORT)`` with one of the default ports (2003, 2004, 8125, 8080, 5000, 7002, 7003)
  become the fixture's free ports;
- ``.run/`` becomes the fixture's run directory (it holds the stack's ``turok.conf``);
- ``.venv/bin/`` becomes this interpreter's directory (the checkout's venv under ``make test``);
- ``/etc/turok.conf`` becomes the configuration of a second set of services on the stack's local
  AWS endpoint (ports, queues, bucket and table prefix of their own), standing in for an AWS
  account; a block naming it gets the local endpoint's credentials, as an AWS host has its role's.

The blocks see no ``AWS_*`` or ``TUROK_*`` variable (as in a fresh shell), and ``PYTHONPATH`` is
the checkout so every service runs this checkout's code. The quickstart must also show the
metric it sent coming back through graphite-web. Daemons a page starts with ``--pidfile`` in the
scratch directory are killed after the page, whatever happened.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

BLOCK_TIMEOUT = 120
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "turok-local", "AWS_SECRET_ACCESS_KEY": "turok-local",
                     "AWS_DEFAULT_REGION": "us-east-1"}
AWS_CONFIG = "/etc/turok.conf"
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def shell_blocks(text: str) -> list[str]:
    """The ``sh`` blocks of a Markdown page, in order."""
    return [body for lang, body in FENCE.findall(text) if lang == "sh"]


def test_every_page_has_its_fences_closed():
    for page in PAGES:
        text = (ROOT / page).read_text()
        fences = [line for line in text.splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0, f"{page}: an unclosed code fence"
        for opening in fences[::2]:
            assert opening[3:].strip(), f"{page}: a code block without a language says nothing about running it"


def test_relative_links_lead_to_files():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / page).read_text()):
            if "://" not in target:
                assert ((ROOT / page).parent / target).exists(), f"{page}: link to {target}, which is not there"


def test_the_quickstart_is_a_block_that_runs():
    blocks = shell_blocks((ROOT / "README.md").read_text())
    assert any("/dev/tcp/127.0.0.1/2003" in block for block in blocks)
    assert any("/render?target=demo.hello" in block for block in blocks)
    assert not any(re.search(r"\b(nc|curl)\b", block) for block in blocks), "a fresh Debian machine has neither"


def _port_map(config) -> dict[str, int]:
    return {"2003": config.plaintext_port, "2004": config.pickle_port, "8125": config.statsd_port,
            "8080": config.graphite_port, "5000": config.local_aws_port, "7002": config.cache_port,
            "7003": config.gateway_cache_port}


def localise(block: str, stack, aws_config: Path) -> str:
    """``block`` addressing the fixture's stack instead of ``make run``'s defaults."""
    tcp = _port_map(stack.config)

    def port(match: re.Match) -> str:
        udp = match.group(1) == "/dev/udp/"
        number = match.group(3)
        if udp and number == "2003":
            return f"{match.group(1)}{match.group(2)}{stack.config.plaintext_udp_port}"
        return f"{match.group(1) or ''}{match.group(2)}{tcp.get(number, number)}"

    block = re.sub(r"(/dev/(?:tcp|udp)/)?(127\.0\.0\.1[:/]|\"127\.0\.0\.1\", )(\d{4})\b", port, block)
    block = re.sub(r"(?<![\w./])\.run/", f"{stack.run_dir}/", block)
    block = re.sub(r"(?<![\w./])\.venv/bin/", f"{Path(sys.executable).parent}/", block)
    return block.replace(AWS_CONFIG, str(aws_config))


@pytest.fixture(scope="module")
def aws_config(stack, tmp_path_factory) -> Path:
    """A configuration for services of their own on the stack's local AWS endpoint, provisioned."""
    suffix = uuid.uuid4().hex[:6]
    settings = {
        "aws_endpoint_url": stack.config.aws_endpoint_url,
        "aws_region": "us-east-1",
        "table_prefix": f"docs{suffix}",
        "queue_name": f"docs-{suffix}-metrics",
        "index_queue_name": f"docs-{suffix}-index",
        "dead_letter_queue_name": f"docs-{suffix}-metrics-dlq",
        "index_bucket": f"docs-{suffix}-index",
        "plaintext_port": free_port(),
        "plaintext_udp_port": free_port(),
        "pickle_port": free_port(),
        "statsd_port": free_port(),
        "cache_port": free_port(),
        "gateway_cache_port": free_port(),
        "receive_wait_seconds": 1,
        "block_close_delay_seconds": 2,
    }
    path = tmp_path_factory.mktemp("aws") / "turok.conf"
    path.write_text("[turok]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
    provisioned = subprocess.run([str(Path(sys.executable).parent / "turok-provision"), "--config", str(path)],
                                 env=_env(credentials=True), capture_output=True, text=True, timeout=60)
    assert provisioned.returncode == 0, provisioned.stderr
    return path


def _env(credentials: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TUROK_"))}
    env["PYTHONPATH"] = str(ROOT)
    if credentials:
        env.update(LOCAL_CREDENTIALS)
    return env


def run_block(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    process = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", block], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"block still running after {BLOCK_TIMEOUT}s:\n{block}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _kill_daemons(scratch: Path) -> None:
    """SIGTERM, then SIGKILL, what the page left running under a pidfile in ``scratch``."""
    pids = []
    for pidfile in scratch.glob("*.pid"):
        try:
            pids.append(int(pidfile.read_text().strip()))
        except (OSError, ValueError):
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.processes
@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", [p for p in PAGES if shell_blocks((ROOT / p).read_text())])
def test_shell_blocks_run(page, stack, aws_config, tmp_path):
    text = (ROOT / page).read_text()
    outputs = []
    try:
        for block in shell_blocks(text):
            result = run_block(localise(block, stack, aws_config), tmp_path, _env(credentials=AWS_CONFIG in block))
            assert result.returncode == 0, (f"{page}: exit status {result.returncode} of\n{block}\n"
                                            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
            outputs.append(result.stdout)
    finally:
        _kill_daemons(tmp_path)
    if page == "README.md":  # the quickstart's point came back through graphite-web's render and find
        assert "demo.hello [42.0]" in outputs[-1], outputs
        assert re.search(r'"id":\s*"demo\.hello"', outputs[-1]), outputs
