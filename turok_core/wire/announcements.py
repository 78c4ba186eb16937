"""Index-queue bodies: turokd announces metric names the index may not have yet.

A body is JSON, ``{"v": 1, "metrics": ["a.b.c", ...]}``, readable by people and other tools;
``encode_announcements`` cuts a list of names into bodies under the queue's size limit.
"""
from __future__ import annotations

import json
from typing import Iterable

from turok_core.model.message import MessageError

ANNOUNCEMENT_VERSION = 1
_ENVELOPE_OVERHEAD = len('{"v": 1, "metrics": []}')


def encode_announcements(names: Iterable[str], max_body_bytes: int = 262144) -> list[str]:
    """Bodies announcing ``names``, each at most ``max_body_bytes`` (UTF-8) long."""
    bodies: list[str] = []
    batch: list[str] = []
    size = _ENVELOPE_OVERHEAD
    for name in names:
        encoded = len(json.dumps(name).encode("utf-8")) + 2  # quotes/escapes plus ", "
        if encoded + _ENVELOPE_OVERHEAD > max_body_bytes:
            raise MessageError(f"metric name of {len(name)} characters cannot be announced")
        if batch and size + encoded > max_body_bytes:
            bodies.append(json.dumps({"v": ANNOUNCEMENT_VERSION, "metrics": batch}))
            batch, size = [], _ENVELOPE_OVERHEAD
        batch.append(name)
        size += encoded
    if batch:
        bodies.append(json.dumps({"v": ANNOUNCEMENT_VERSION, "metrics": batch}))
    return bodies


def decode_announcement(body: str) -> list[str]:
    """The metric names in an index-queue body; raises ``MessageError`` when it is not one."""
    try:
        decoded = json.loads(body)
    except ValueError as exc:
        raise MessageError(f"announcement is not JSON: {exc}") from None
    if not isinstance(decoded, dict) or decoded.get("v") != ANNOUNCEMENT_VERSION:
        raise MessageError("announcement lacks version 1")
    names = decoded.get("metrics")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise MessageError("announcement metrics must be a list of non-empty strings")
    return names
