"""The dedicated thread pool every service runs its blocking boto3 calls in."""
from __future__ import annotations

from typing import Any

from twisted.python.threadpool import ThreadPool


def start_aws_threadpool(reactor: Any, size: int, name: str) -> ThreadPool:
    """A started thread pool of ``size`` threads, stopped when the reactor shuts down.

    ``reactor`` provides IReactorCore (typed Any: Twisted's zope interfaces need mypy-zope)."""
    pool = ThreadPool(minthreads=1, maxthreads=max(1, size), name=name)
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return pool
