"""In-process fakes for unit tests: a reactor and a thread pool that run everything at once."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.python.failure import Failure


class ImmediateReactor(Clock):
    """A task.Clock that also runs callFromThread at once (the pool below is synchronous)."""

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class ImmediatePool:
    """Runs the pool's work in the calling thread, with deferToThreadPool's callback protocol."""

    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)
