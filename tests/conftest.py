"""Fixtures shared by the whole suite: a real moto server on loopback and configs pointing at it,
dynalite (DynamoDB only) beside it for the storage contracts, and a queue (in memory or SQS on
moto) for the tests every queue must pass."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


# fixtures that start real processes (twistd services, the whole stack)
PROCESS_FIXTURES = {"stack", "gateway", "turokd", "indexer"}
PROCESS_FOLDERS = {"e2e", "dev"}  # every test there runs real processes
# dynalite from npm, installed by `make dynalite` (part of `make test`) into tests/.node, not committed
DYNALITE_CLI = ROOT / "tests" / ".node" / "node_modules" / "dynalite" / "cli.js"


def pytest_collection_modifyitems(config, items) -> None:
    """Markers say what a test needs, so ``-m "not moto and not dynalite and not processes"`` runs
    the pure tests alone: ``moto`` and ``dynalite`` for every test that uses that server (found
    through its fixtures, so none is missed; ``DYNAMODB_SERVERS`` marks the cases of a suite run
    on each), ``processes`` for the e2e and dev folders and the fixtures that start services;
    tests that start processes themselves carry the marker by hand."""
    for item in items:
        fixtures = set(item.fixturenames)
        if "moto_endpoint" in fixtures:
            item.add_marker(pytest.mark.moto)
        if "dynalite_endpoint" in fixtures:
            item.add_marker(pytest.mark.dynalite)
        folder = Path(item.path).relative_to(ROOT / "tests").parts[0]
        if folder in PROCESS_FOLDERS or fixtures & PROCESS_FIXTURES:
            item.add_marker(pytest.mark.processes)


_HANDED_OUT: set[int] = set()  # ports free_port returned: nothing may get one twice


def free_port() -> int:
    """A loopback port nothing listens on now and that this test run has not handed out before
    (a port chosen for a config is only bound later, when its service starts: the kernel could
    offer it again to the next caller meanwhile)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port left that was not handed out already")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the thing we wait for may fail until it is ready
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A moto server (DynamoDB, SQS, S3 on one port) bound to 127.0.0.1 for the whole session."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    # moto with atomic conditional writes (turok_core/dev/moto_server.py), as AWS has them
    process = subprocess.Popen([sys.executable, "-m", "turok_core.dev.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(url + "/moto-api/", timeout=1).status == 200, 30, "moto server")
        yield url
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="session")
def dynalite_endpoint(tmp_path_factory):
    """dynalite (npm; in memory) bound to 127.0.0.1 for the whole session: DynamoDB only, but
    validating requests as DynamoDB does where moto lets them through (26-item BatchWriteItem
    calls, table names of any character or length), keeping new tables CREATING for 500 ms and
    leaving BatchGetItem keys unprocessed past a size of answer, as DynamoDB does. It never
    leaves BatchWriteItem items unprocessed (nor does moto).

    Fails (never skips) when node or the package is missing: ``make dynalite`` installs it, and
    ``make test`` does; ``-m "not dynalite"`` leaves these tests out."""
    node = shutil.which("node")
    if node is None or not DYNALITE_CLI.exists():
        pytest.fail(f"dynalite is not installed ({DYNALITE_CLI.relative_to(ROOT)}): `make dynalite` installs it")
    log_path = tmp_path_factory.mktemp("dynalite") / "dynalite.log"
    process, port = _start_dynalite(node, log_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def _start_dynalite(node: str, log_path: Path, timeout: float = 30.0) -> tuple[subprocess.Popen, int]:
    """dynalite on a free loopback port, once it says it listens there (not merely once the port
    answers: whatever took the port first would answer too); another port if it was taken."""
    for _ in range(3):
        port = free_port()
        with open(log_path, "w") as log:
            process = subprocess.Popen([node, str(DYNALITE_CLI), "--host", "127.0.0.1", "--port", str(port)],
                                       stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"listening at: http://127.0.0.1:{port}" in log_path.read_text():
                return process, port
            if process.poll() is not None:
                break  # EADDRINUSE: the port was taken between free_port and now
            time.sleep(0.05)
        else:
            _stop(process)
            raise AssertionError(f"dynalite did not listen within {timeout}s; see {log_path}")
    raise AssertionError(f"dynalite exited three times; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# the DynamoDB servers a DynamoDB suite runs on, each case marked as its server's fixture would be:
# ``@pytest.fixture(params=["memory", *DYNAMODB_SERVERS])``, then ``make_dynamodb_config(request, request.param)``
DYNAMODB_SERVERS = [pytest.param("moto", marks=pytest.mark.moto),
                    pytest.param("dynalite", marks=pytest.mark.dynalite)]


def make_dynamodb_config(request, server: str):
    """A TurokConfig on DynamoDB server ``server`` ("moto" or "dynalite", started for the session on
    first use) with a table prefix of its own; nothing provisioned (dynalite has no SQS or S3)."""
    from turok_core.model.config import TurokConfig

    endpoint = request.getfixturevalue(f"{server}_endpoint")
    return TurokConfig(aws_endpoint_url=endpoint, aws_region="us-east-1", table_prefix=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=DYNAMODB_SERVERS)
def dynamodb_server(request) -> str:
    """Each DynamoDB server in turn: "moto", then "dynalite" (whose validation is closer to DynamoDB's)."""
    return request.param


@pytest.fixture
def dynamodb_config(request, dynamodb_server: str):
    """A TurokConfig on each DynamoDB server in turn; see ``make_dynamodb_config``."""
    return make_dynamodb_config(request, dynamodb_server)


@pytest.fixture(scope="session")
def moto_clients(moto_endpoint) -> dict:
    """boto3 clients on the moto server by service, made once for the session (a client costs
    ~0.1 s to make): for provisioning what each test uses, not for the code under test."""
    from turok_core.model.config import TurokConfig
    from turok_core.runtime.aws import make_client

    config = TurokConfig(aws_endpoint_url=moto_endpoint, aws_region="us-east-1")
    return {service: make_client(service, config) for service in ("sqs", "dynamodb", "s3")}


@pytest.fixture
def turok_config(moto_endpoint, moto_clients):
    """A TurokConfig on the moto server with names unique to this test, already provisioned."""
    from turok_core.model.config import TurokConfig
    from turok_core.runtime.provision import provision

    tag = uuid.uuid4().hex[:8]
    cache_port, gateway_cache_port = free_port(), free_port()
    config = TurokConfig(
        aws_endpoint_url=moto_endpoint,
        aws_region="us-east-1",
        queue_name=f"metrics-{tag}",
        index_queue_name=f"index-{tag}",
        dead_letter_queue_name=f"dlq-{tag}",
        index_bucket=f"index-{tag}",
        table_prefix=f"t{tag}",
        receive_wait_seconds=1,
        block_close_delay_seconds=2,
        late_merge_delay_seconds=2,  # old data (most tests send it) is written 2 s after its last slot
        cache_port=cache_port,
        gateway_cache_port=gateway_cache_port,
        cache_hosts=f"127.0.0.1:{cache_port},127.0.0.1:{gateway_cache_port}",
    )
    provision(config, moto_clients)
    return config


@pytest.fixture
def index_config(moto_endpoint, moto_clients):
    """A TurokConfig on the moto server with an index bucket of its own and nothing else
    provisioned: the index's tests need no queue or table (``turok_config`` makes them all)."""
    from turok_core.model.config import TurokConfig
    from turok_core.runtime.provision import provision_bucket

    config = TurokConfig(aws_endpoint_url=moto_endpoint, aws_region="us-east-1",
                         index_bucket=f"index-{uuid.uuid4().hex[:8]}")
    provision_bucket(moto_clients["s3"], config)
    return config


@contextmanager
def running_twistd(plugin: str, config, workdir: Path, ready: Callable[[Path], object], what: str,
                   timeout: float = 20.0) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A real ``twistd -n <plugin> --config FILE`` on the checkout's code; yields (log, process).

    ``ready(log_path)`` says when it serves; on exit the process gets SIGTERM, then SIGKILL."""
    from turok_core.dev.stack import write_config

    ini, logfile = workdir / f"{plugin}.ini", workdir / f"{plugin}.log"
    write_config(config, ini)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TUROK_")}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen([str(VENV_BIN / "twistd"), "-n", "--pidfile=", f"--logfile={logfile}", plugin,
                                "--config", str(ini)], cwd=str(workdir), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def started():
        if process.poll() is not None:
            raise AssertionError(f"twistd {plugin} exited {process.returncode}: {process.stdout.read()!r}")
        return logfile.exists() and ready(logfile)

    try:
        wait_for(started, timeout, what)
        yield logfile, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        process.stdout.close()


@pytest.fixture(scope="session")
def graphite_django(tmp_path_factory):
    """graphite-web's Django settings with Turok's settings module and a throw-away storage dir
    (the finder imports graphite's modules, which need them)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "graphite.settings")
    os.environ.setdefault("GRAPHITE_SETTINGS_MODULE", "turok_core.dev.graphite_settings")
    os.environ.setdefault("GRAPHITE_STORAGE_DIR", str(tmp_path_factory.mktemp("graphite")))
    import django

    from turok_core.dev.stack import prepare_graphite_storage

    prepare_graphite_storage(Path(os.environ["GRAPHITE_STORAGE_DIR"]))

    django.setup()


def with_schema_files(config, directory: Path, schemas: str, aggregation: str):
    """``config`` reading carbon schema and aggregation files written into ``directory``."""
    (directory / "schemas.conf").write_text(schemas)
    (directory / "aggregation.conf").write_text(aggregation)
    return config.replace(schemas_file=str(directory / "schemas.conf"),
                          aggregation_file=str(directory / "aggregation.conf"))


def _no_wait(seconds: float) -> None:
    """A ``sleep`` for retries in tests: no waiting."""


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.moto),
                        pytest.param("tags-s3", marks=pytest.mark.moto)])
def index_stores(request):
    """A factory of index stores that all work on one fresh index: the in-memory store, or
    ``IndexStore`` on the moto server (``index_config``'s bucket, new for each test), for the name
    index or the tag index (``turok_core.index.tag_cache.make_tag_store``: its own prefix).

    ``index_stores(shards=8, max_attempts=None, sleep=None)`` gives another writer of that index
    (on the session's S3 client: a store keeps no state in its client); it waits for nothing
    between retries unless given a ``sleep``."""
    from turok_core.index.memory_store import MemoryIndex, MemoryIndexStore
    from turok_core.model.config import TurokConfig

    if request.param == "memory":
        index, config = MemoryIndex(), TurokConfig()

        def make(shards: int = 8, max_attempts=None, sleep=None):
            return MemoryIndexStore(config.replace(index_shards=shards), index, max_attempts, sleep or _no_wait)
    elif request.param == "s3":
        from turok_core.index.s3_store import IndexStore

        config, s3 = request.getfixturevalue("index_config"), request.getfixturevalue("moto_clients")["s3"]

        def make(shards: int = 8, max_attempts=None, sleep=None):
            return IndexStore(s3, config.replace(index_shards=shards), max_attempts, sleep or _no_wait)
    else:
        from turok_core.index.tag_cache import make_tag_store

        config, s3 = request.getfixturevalue("index_config"), request.getfixturevalue("moto_clients")["s3"]

        def make(shards: int = 8, max_attempts=None, sleep=None):
            return make_tag_store(s3, config.replace(tag_index_shards=shards), max_attempts=max_attempts,
                                  sleep=sleep or _no_wait)
    return make


@dataclass
class QueueUnderTest:
    """A queue with its dead-letter queue, whichever implementation, and how to let time pass."""
    queue: object  # MessageQueue on moto or MemoryQueue
    dead_letters: object
    visibility_timeout: int  # the queue's, in seconds
    max_receives: int  # receives before the next one moves a message to ``dead_letters``
    max_message_bytes: int
    advance: Callable[[float], None]  # let that many seconds pass for the queue


@pytest.fixture(params=["memory", pytest.param("sqs", marks=pytest.mark.moto)])
def any_queue(request) -> QueueUnderTest:
    """Every queue implementation in turn: ``MemoryQueue`` on a fake clock, then ``MessageQueue``
    on a moto queue provisioned as turok-provision does (redrive policy included)."""
    from turok_core.runtime.aws import make_client
    from turok_core.runtime.provision import provision_queues
    from turok_core.wire.memory_queue import MemoryQueue
    from turok_core.wire.queues import MessageQueue

    visibility, receives, size = 1, 2, 4096
    if request.param == "memory":
        now = [time.time()]
        dead_letters = MemoryQueue("dlq", clock=lambda: now[0])
        queue = MemoryQueue("metrics", visibility, size, dead_letters, receives, clock=lambda: now[0])
        return QueueUnderTest(queue, dead_letters, visibility, receives, size,
                              lambda seconds: now.__setitem__(0, now[0] + seconds))
    config = request.getfixturevalue("turok_config").replace(
        visibility_timeout_seconds=visibility, dead_letter_max_receives=receives, sqs_max_message_bytes=size)
    sqs = make_client("sqs", config)
    provision_queues(sqs, config)
    # retries of refused sends without waiting: the test is about the outcome, not the backoff
    queue = MessageQueue(sqs, config.queue_name, size, sleep=lambda seconds: None)
    return QueueUnderTest(queue, MessageQueue(sqs, config.dead_letter_queue_name), visibility, receives, size,
                          lambda seconds: time.sleep(seconds + 0.2))
