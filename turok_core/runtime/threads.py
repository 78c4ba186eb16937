"""The dedicated thread pool every service runs its blocking boto3 calls in."""
from __future__ import annotations

from twisted.python.threadpool import ThreadPool


def start_aws_threadpool(reactor, size: int, name: str) -> ThreadPool:
    """A started thread pool of ``size`` threads, stopped when the reactor shuts down."""
    pool = ThreadPool(minthreads=1, maxthreads=max(1, size), name=name)
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return pool
