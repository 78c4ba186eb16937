"""A fault-injecting HTTP proxy for tests: real processes talk to moto through it and meet AWS's failures.

``FaultProxy(upstream)`` listens on 127.0.0.1 and forwards every request to ``upstream`` (the
session's moto server). For DynamoDB requests (``X-Amz-Target: DynamoDB_20120810.<Operation>``)
it injects, at the rates of its ``Faults`` and from one seeded random generator:

- ``ProvisionedThroughputExceededException`` and ``ThrottlingException``: HTTP 400 with the JSON
  error body DynamoDB sends (botocore takes the code after ``#`` in ``__type``);
- HTTP 500 (``InternalServerError``) and 503 (``ServiceUnavailable``), either before forwarding or,
  with ``lost_response``, *after* moto applied the request (the write happened, the client
  hears it failed: a retry must be harmless);
- partial ``BatchWriteItem``: only some of the items reach moto, the rest come back as
  ``UnprocessedItems``; partial ``BatchGetItem``: only some keys are read, the rest come back as
  ``UnprocessedKeys`` (a batch may be answered with nothing processed at all, as AWS may).

Other services (SQS, S3) pass through untouched, except that conditional S3 PUTs (``If-Match``,
``If-None-Match``) are forwarded one at a time: moto checks the condition and stores the object
in two steps without a lock, so two concurrent compare-and-swaps could both win there, which S3
never allows. ``proxy.hold_puts(fragment)`` makes every S3 PUT whose path contains ``fragment``
wait (as a very slow request would) until ``proxy.release_puts()``: a step of the client's work
held back while the test does something else (``proxy.held`` counts the PUTs that waited). The
test changes the faults at any time with
``proxy.faults = Faults(...)`` or ``proxy.set_faults(...)`` and reads what was injected from
``proxy.counts`` (``{(operation, kind): n}``). The draws come from one ``random.Random(seed)``, so a
run's sequence of decisions is fixed, while which request meets which decision depends on the
order requests arrive in.

Threads are bounded: a fixed pool of ``workers`` serves the connections, and every response
closes its connection so a worker is never held by an idle keep-alive client.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import queue
import random
import socket
import threading
import time
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Optional

DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
# hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side
# (and Expect: the proxy has read the whole body before it forwards anything)
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
               "expect"}

# (HTTP status, __type, message) as DynamoDB answers them
ERRORS = {
    "provisioned": (400, "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded. "
                    "Consider increasing your provisioning level with the UpdateTable API."),
    "throttling": (400, "com.amazon.coral.availability#ThrottlingException",
                   "Rate of requests exceeds the allowed throughput."),
    "500": (500, "com.amazonaws.dynamodb.v20120810#InternalServerError", "Internal server error"),
    "503": (503, "com.amazon.coral.availability#ServiceUnavailableException", "Service unavailable"),
}


@dataclass(frozen=True)
class Faults:
    """Probabilities (0..1) per DynamoDB request of each fault; ``operations`` limits them to some.

    The error kinds are drawn in one roll, so their rates add up (at most 1). A batch request that
    meets no error is then made partial with probability ``partial_batch``; each of its items (or
    keys) is left unprocessed with probability ``unprocessed_fraction`` (and at least one is).
    """
    provisioned: float = 0.0
    throttling: float = 0.0
    error_500: float = 0.0
    error_503: float = 0.0
    lost_response: float = 0.0  # share of the 5xx injected after moto applied the request
    partial_batch: float = 0.0
    unprocessed_fraction: float = 0.5
    operations: Optional[frozenset[str]] = None  # None: every DynamoDB operation

    @classmethod
    def uniform(cls, rate: float, **overrides) -> "Faults":
        """About ``rate`` of batch requests meet a fault, a fifth each of provisioned throughput,
        throttling, 500, 503 (half of the 5xx after forwarding) and a partial batch; single-item
        requests meet the four errors only (4/5 of ``rate``)."""
        share = rate / 5
        values = dict(provisioned=share, throttling=share, error_500=share, error_503=share, lost_response=0.5,
                      partial_batch=min(1.0, share / (1 - 4 * share)) if share < 0.25 else 1.0)
        values.update(overrides)
        return cls(**values)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` injecting DynamoDB faults (see module doc)."""

    def __init__(self, upstream: str, faults: Faults = Faults(), seed: int = 0, workers: int = 16,
                 port: int = 0, upstream_timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._upstream_timeout = upstream_timeout
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._swap_lock = threading.Lock()  # one conditional S3 PUT at a time (see the module doc)
        self.faults = faults
        self.counts: dict[tuple[str, str], int] = {}
        self.requests: dict[str, int] = {}  # DynamoDB requests seen, by operation
        self._arrivals: dict[bytes, list[float]] = {}  # DynamoDB request fingerprint → arrival times
        self._connections: "queue.Queue[Optional[socket.socket]]" = queue.Queue(maxsize=workers * 4)
        self._server = _Server(("127.0.0.1", port), _Handler, self)
        self._workers = [threading.Thread(target=self._work, name=f"faultproxy-{i}", daemon=True)
                         for i in range(workers)]
        self._acceptor = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                          name="faultproxy-accept", daemon=True)
        self._local = threading.local()
        self._hold_fragment: Optional[str] = None
        self._released = threading.Event()
        self._released.set()
        self.held = 0

    # ----------------------------------------------------------------------------- control

    def hold_puts(self, fragment: str) -> None:
        """Hold every S3 PUT whose path contains ``fragment`` until ``release_puts``."""
        with self._lock:
            self._hold_fragment = fragment
            self._released.clear()

    def release_puts(self) -> None:
        """Let the held S3 PUTs (and every later one) through."""
        with self._lock:
            self._hold_fragment = None
            self._released.set()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_faults(self, **rates) -> None:
        """Change some rates of the current faults (``proxy.set_faults(throttling=0.2)``)."""
        with self._lock:
            self.faults = replace(self.faults, **rates)

    def injected(self, kind: Optional[str] = None) -> int:
        """How many faults were injected (of one kind: ``provisioned``, ``throttling``, ``500``,
        ``503``, ``500-lost``, ``503-lost``, ``unprocessed-items``, ``unprocessed-keys``)."""
        with self._lock:
            return sum(n for (_op, k), n in self.counts.items() if kind is None or k == kind)

    def retry_gaps(self) -> list[list[float]]:
        """For each DynamoDB request that arrived more than once (same operation and body: a
        retry), the seconds between its consecutive arrivals."""
        with self._lock:
            times = [list(t) for t in self._arrivals.values() if len(t) > 1]
        return [[b - a for a, b in zip(t, t[1:])] for t in times]

    def start(self) -> "FaultProxy":
        for worker in self._workers:
            worker.start()
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for _ in self._workers:
            self._connections.put(None)
        for worker in self._workers:
            worker.join(5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- serving

    def _work(self) -> None:
        while True:
            sock = self._connections.get()
            if sock is None:
                return
            try:
                self._server.finish_request(sock, sock.getpeername())
            except Exception:  # a client that went away mid-request is its own problem
                pass
            finally:
                self._server.shutdown_request(sock)

    def _note(self, operation: str, kind: str) -> None:
        with self._lock:
            self.counts[(operation, kind)] = self.counts.get((operation, kind), 0) + 1

    def _decide(self, operation: str, body: bytes) -> tuple[Optional[str], bool, Optional[random.Random]]:
        """(error kind or None, whether the error comes after forwarding, generator for a partial batch)."""
        fingerprint = hashlib.sha1(operation.encode() + b"\0" + body).digest()
        with self._lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1
            if len(self._arrivals) < 1_000_000:
                self._arrivals.setdefault(fingerprint, []).append(time.monotonic())
            faults = self.faults
            if faults.operations is not None and operation not in faults.operations:
                return None, False, None
            roll = self._random.random()
            after = self._random.random() < faults.lost_response
            partial = self._random.random() < faults.partial_batch
            seed = self._random.getrandbits(32)
        for kind, rate in (("provisioned", faults.provisioned), ("throttling", faults.throttling),
                           ("500", faults.error_500), ("503", faults.error_503)):
            if roll < rate:
                return kind, after and kind in ("500", "503"), None
            roll -= rate
        if partial and operation in ("BatchWriteItem", "BatchGetItem"):
            return None, False, random.Random(seed)
        return None, False, None

    def forward(self, method: str, path: str, headers: list[tuple[str, str]],
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request upstream on this thread's connection; (status, headers, body)."""
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = http.client.HTTPConnection(
                    *self._upstream, timeout=self._upstream_timeout)
            try:
                connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        connection.putheader(name, value)
                connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body)
                response = connection.getresponse()
                data = response.read()
                return response.status, response.getheaders(), data
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def handle(self, method: str, path: str, headers: list[tuple[str, str]],
               body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one client request: forwarded, faulted or made partial."""
        names = {k.lower(): v for k, v in headers}
        target = names.get("x-amz-target", "")
        if not target.startswith(DYNAMODB_TARGET_PREFIX):
            with self._lock:
                hold = method == "PUT" and self._hold_fragment is not None and self._hold_fragment in path
                self.held += hold
            if hold:  # before the compare-and-swap lock: other conditional PUTs go on meanwhile
                self._released.wait(self._upstream_timeout)
            if method == "PUT" and ("if-match" in names or "if-none-match" in names):
                with self._swap_lock:
                    return self.forward(method, path, headers, body)
            return self.forward(method, path, headers, body)
        operation = target[len(DYNAMODB_TARGET_PREFIX):]
        kind, after, partial = self._decide(operation, body)
        if kind is not None:
            if after:
                self.forward(method, path, headers, body)  # applied upstream; the answer is lost
                self._note(operation, f"{kind}-lost")
            else:
                self._note(operation, kind)
            status, type_, message = ERRORS[kind]
            return _dynamodb_answer(status, {"__type": type_, "message": message})
        if partial is not None:
            if operation == "BatchWriteItem":
                return self._partial_write(partial, method, path, headers, body)
            return self._partial_get(partial, method, path, headers, body)
        return self.forward(method, path, headers, body)

    def _split(self, rng: random.Random, items: list) -> tuple[list, list]:
        """(kept, left unprocessed): each item left with ``unprocessed_fraction``, at least one."""
        fraction = self.faults.unprocessed_fraction
        chosen = rng.randrange(len(items)) if items else -1
        kept, left = [], []
        for index, item in enumerate(items):
            (left if index == chosen or rng.random() < fraction else kept).append(item)
        return kept, left

    def _partial_write(self, rng, method, path, headers, body):
        request = json.loads(body)
        forwarded: dict[str, list] = {}
        unprocessed: dict[str, list] = {}
        for table, writes in request.get("RequestItems", {}).items():
            kept, left = self._split(rng, writes)
            if kept:
                forwarded[table] = kept
            if left:
                unprocessed[table] = left
        if not unprocessed:
            return self.forward(method, path, headers, body)
        self._note("BatchWriteItem", "unprocessed-items")
        answer: dict = {"UnprocessedItems": {}}
        if forwarded:
            request["RequestItems"] = forwarded
            status, _headers, data = self.forward(method, path, headers, json.dumps(request).encode())
            if status != 200:  # moto refused the smaller batch: pass its answer on as it is
                return status, _headers, data
            answer = json.loads(data)
        merged = answer.setdefault("UnprocessedItems", {})
        for table, writes in unprocessed.items():
            merged.setdefault(table, []).extend(writes)
        return _dynamodb_answer(200, answer)

    def _partial_get(self, rng, method, path, headers, body):
        request = json.loads(body)
        forwarded: dict[str, dict] = {}
        unprocessed: dict[str, dict] = {}
        for table, spec in request.get("RequestItems", {}).items():
            kept, left = self._split(rng, spec.get("Keys", []))
            if kept:
                forwarded[table] = {**spec, "Keys": kept}
            if left:
                unprocessed[table] = {**spec, "Keys": left}
        if not unprocessed:
            return self.forward(method, path, headers, body)
        self._note("BatchGetItem", "unprocessed-keys")
        answer: dict = {"Responses": {}, "UnprocessedKeys": {}}
        if forwarded:
            request["RequestItems"] = forwarded
            status, _headers, data = self.forward(method, path, headers, json.dumps(request).encode())
            if status != 200:
                return status, _headers, data
            answer = json.loads(data)
        merged = answer.setdefault("UnprocessedKeys", {})
        for table, spec in unprocessed.items():
            if table in merged:
                merged[table]["Keys"].extend(spec["Keys"])
            else:
                merged[table] = spec
        return _dynamodb_answer(200, answer)


def _dynamodb_answer(status: int, document: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    """A DynamoDB JSON response with the headers AWS sends (request id, CRC32 of the body)."""
    body = json.dumps(document).encode("utf-8")
    return status, [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", uuid.uuid4().hex),
                    ("x-amz-crc32", str(zlib.crc32(body)))], body


class _Server(HTTPServer):
    """Accepts on one thread and queues each connection for the proxy's fixed worker pool."""

    def __init__(self, address, handler, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        try:
            self.proxy._connections.put(request, timeout=30)
        except queue.Full:  # every worker busy for 30 s: refuse rather than queue without bound
            self.shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops sending mid-request frees its worker

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        try:
            status, headers, data = proxy.handle(self.command, self.path, list(self.headers.items()), body)
        except (http.client.HTTPException, OSError) as exc:
            status, headers, data = 502, [("Content-Type", "text/plain")], f"upstream failed: {exc!r}".encode()
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _serve

    def log_message(self, format: str, *args) -> None:  # quiet: the tests read counts instead
        pass
