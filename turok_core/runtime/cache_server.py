"""The cache query endpoint of turokd and the gateway: the slots they hold, for the finder (``cache_query.py``)."""
from __future__ import annotations

import json
from typing import Callable

from twisted.web import resource, server

from turok_core.wire.cache_query import CacheQueryError, encode_answer, parse_request

# (metrics, from, until) → {metric: {step: [[slot start, value], …]}}, e.g. ``OpenBlocks.points``
PointsSource = Callable[[list, float, float], dict]


class CacheQueryResource(resource.Resource):
    """``POST /cache`` with a JSON request; answered on the reactor thread from memory."""

    isLeaf = True

    def __init__(self, points: PointsSource, counted: Callable[[bool], None]) -> None:
        super().__init__()
        self._points = points
        self._counted = counted  # called with True for a query answered, False for one refused

    def render_POST(self, request: server.Request) -> bytes:
        if request.postpath not in ([b"cache"], [b"cache", b""]):
            request.setResponseCode(404)
            return b'{"error": "not found; POST /cache"}'
        request.setHeader(b"Content-Type", b"application/json")
        try:
            metrics, start, until = parse_request(request.content.read() if request.content is not None else b"")
        except CacheQueryError as exc:
            self._counted(False)
            request.setResponseCode(400)
            return encode_error(str(exc))
        self._counted(True)
        return encode_answer(self._points(metrics, start, until))


def encode_error(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


def cache_site(points: PointsSource, counted: Callable[[bool], None]) -> server.Site:
    """An HTTP site answering cache queries from ``points``; ``counted`` hears of each query."""
    site = server.Site(CacheQueryResource(points, counted))
    site.noisy = False
    site.displayTracebacks = False
    return site
