"""Retries against AWS, written once: capped exponential backoff with jitter, and error codes.

Every retry loop in Turok (DynamoDB batch writes, SQS sends and visibility changes, S3 index
compare-and-swap, the keeper's table deletes, the gateway's drain and the consumer loops) takes
its delay from one ``Backoff``: ``base * 2**attempt`` capped at ``cap``, then scaled by a random
factor in ``jitter`` so that processes that failed together do not retry together. No I/O here:
callers sleep (or schedule) the delay themselves.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from botocore.exceptions import ClientError


@dataclass(frozen=True)
class Backoff:
    """Delays for attempt 0, 1, 2, …: ``min(cap, base * 2**attempt) * uniform(*jitter)``."""

    base: float
    cap: float
    jitter: tuple[float, float] = (0.5, 1.0)
    uniform: Callable[[float, float], float] = random.uniform

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        # the exponent is bounded so a long outage never overflows a float
        return min(self.cap, self.base * 2 ** min(attempt, 62)) * self.uniform(*self.jitter)


def error_code(exc: ClientError) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` when the answer had none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    """The HTTP status of the answer behind a ``ClientError`` (0 when unknown)."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
