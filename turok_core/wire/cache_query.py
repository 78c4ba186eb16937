"""The cache query: how a finder sees the slots turokd holds but has not written yet.

Carbon's graphite-web asks carbon-cache for points not yet in whisper (CARBONLINK_HOSTS, cache
query port 7002); Turok's finder asks every turokd in ``cache_hosts`` the same way, over HTTP
with JSON so an operator can ask too::

    POST /cache  {"metrics": ["a.b", …], "from": 1700000000, "until": 1700003600}
    → {"a.b": {"10": [[1700000010, 1.5], …]}, …}    (per metric, per step: [slot start, value])

The request side (``CacheClient``) and the request/answer codec are here, free of Twisted;
turokd's HTTP resource (``turok_core/runtime/cache_server.py``) answers from its ``OpenBlocks``.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

from turok_core.model.config import TurokConfig

MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_REQUEST_METRICS = 100_000

Cached = dict[str, dict[int, dict[int, float]]]  # metric → step → slot start → value

log = logging.getLogger("turok.cache_query")


class CacheQueryError(ValueError):
    """A cache query that cannot be answered, with the reason (HTTP 400)."""


def parse_request(body: bytes) -> tuple[list[str], float, float]:
    """``(metrics, from, until)`` of a request body; raises ``CacheQueryError``."""
    if len(body) > MAX_REQUEST_BYTES:
        raise CacheQueryError(f"request of {len(body)} bytes is over {MAX_REQUEST_BYTES}")
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise CacheQueryError(f"request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise CacheQueryError("request must be a JSON object")
    metrics, start, until = request.get("metrics"), request.get("from", 0), request.get("until")
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise CacheQueryError("'metrics' must be a list of names")
    if len(metrics) > MAX_REQUEST_METRICS:
        raise CacheQueryError(f"over {MAX_REQUEST_METRICS} metrics in one request")
    if until is None:
        until = float("inf")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (start, until)):
        raise CacheQueryError("'from' and 'until' must be numbers (epoch seconds)")
    return metrics, float(start), float(until)


def encode_answer(points: dict[str, dict[int, list]]) -> bytes:
    """The JSON answer for ``OpenBlocks.points``' result."""
    return json.dumps({metric: {str(step): slots for step, slots in steps.items()}
                       for metric, steps in points.items()}, separators=(",", ":")).encode()


def merge_answer(into: Cached, answer: dict) -> None:
    """Add one host's answer to ``into`` (hosts hold different slots; a clash keeps either)."""
    for metric, steps in answer.items():
        for step, slots in steps.items():
            target = into.setdefault(metric, {}).setdefault(int(step), {})
            for ts, value in slots:
                target[int(ts)] = float(value)


class CacheClient:
    """Asks every turokd in ``hosts`` (``host:port``) for the slots it holds, in parallel."""

    def __init__(self, hosts: Sequence[str], timeout: float = 1.0) -> None:
        self.hosts = [h.strip() for h in hosts if h.strip()]
        self.timeout = timeout
        self._pool: Optional[ThreadPoolExecutor] = None
        self._failed_at: dict[str, float] = {}

    @classmethod
    def from_config(cls, config: TurokConfig) -> "CacheClient":
        return cls(config.cache_hosts.split(","), config.cache_timeout_seconds)

    def query(self, metrics: Sequence[str], start: float, until: float) -> Cached:
        """Held slots of ``metrics`` in ``[start, until)``; an unreachable host is logged and skipped."""
        result: Cached = {}
        if not self.hosts or not metrics:
            return result
        body = json.dumps({"metrics": list(metrics), "from": start, "until": until}).encode()
        if len(self.hosts) == 1:
            answers = [self._ask(self.hosts[0], body)]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(min(16, len(self.hosts)), thread_name_prefix="turok-cache")
            answers = list(self._pool.map(lambda host: self._ask(host, body), self.hosts))
        for answer in answers:
            if answer:
                merge_answer(result, answer)
        return result

    def _ask(self, host: str, body: bytes) -> Optional[dict]:
        request = urllib.request.Request(f"http://{host}/cache", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except Exception as exc:  # a turokd down or slow must not fail the render
            now = time.monotonic()
            if now - self._failed_at.get(host, -1e9) > 60:
                self._failed_at[host] = now
                log.warning("turok cache query to %s failed: %r (reading DynamoDB only)", host, exc)
            return None
