"""moto's server with conditional writes as atomic as AWS's: ``python -m turok_core.dev.moto_server``.

Turok's correctness rests on compare-and-swap: S3 ``PutObject`` with ``If-Match`` or
``If-None-Match: *`` for the index shards, DynamoDB ``PutItem`` with a condition for merged
blocks. AWS checks the condition and writes in one step. moto's threaded server checks, then
writes, with nothing between them: two writers can both pass the same ``If-Match`` and one
update is lost — on a busy machine that happens, and a race test fails for moto's sake. Here
every S3 object write and every DynamoDB item write runs under one lock, so the check and the
write are one step again. Same command line as ``moto_server``; for tests and ``make run`` only.
"""
from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable

from moto.dynamodb.responses import DynamoHandler
from moto.s3.responses import S3Response
from moto.server import main

_WRITES = threading.Lock()

# the handlers whose condition check and write must not interleave with another write
ATOMIC_HANDLERS: dict[type, tuple[str, ...]] = {
    S3Response: ("put_object",),
    DynamoHandler: ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items"),
}


def _atomic(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return handler(*args, **kwargs)
    return locked


_wrapped: set[tuple[type, str]] = set()


def make_writes_atomic() -> None:
    """Wrap moto's write handlers in one lock (idempotent)."""
    for cls, names in ATOMIC_HANDLERS.items():
        for name in names:
            if (cls, name) not in _wrapped:
                setattr(cls, name, _atomic(getattr(cls, name)))
                _wrapped.add((cls, name))


if __name__ == "__main__":
    make_writes_atomic()
    main(sys.argv[1:])
