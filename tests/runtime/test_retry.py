"""The one backoff every retry loop uses, and the AWS error-code helpers."""
from __future__ import annotations

import random

from botocore.exceptions import ClientError

from turok_core.runtime.retry import Backoff, error_code, http_status


def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(7)
    backoff = Backoff(base=0.1, cap=5.0, uniform=rng.uniform)
    for attempt in range(20):
        ceiling = min(5.0, 0.1 * 2 ** attempt)
        draws = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in draws), attempt
        assert len(set(draws)) > 40  # processes that failed together do not retry together
    assert backoff.delay(10_000) <= 5.0  # a long outage never overflows


def test_backoff_jitter_range_is_the_callers():
    backoff = Backoff(base=1.0, cap=2.0, jitter=(1.0, 1.0))
    assert [backoff.delay(a) for a in range(3)] == [1.0, 2.0, 2.0]


def test_error_code_and_status_of_a_client_error():
    exc = ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                       "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutItem")
    assert error_code(exc) == "ThrottlingException" and http_status(exc) == 400
    bare = ClientError({}, "GetObject")
    assert error_code(bare) == "" and http_status(bare) == 0
