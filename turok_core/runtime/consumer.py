"""What turokd and turok-indexer share: poll loops over an SQS queue in an AWS thread pool.

Each of ``pollers`` loops calls the subclass's ``poll_once`` (receive → work → delete) until the
service stops; a failed round is logged (rate-limited), backed off and retried, never fatal,
since SQS redelivers whatever was not deleted. ``stopService`` waits for the rounds in flight.
Every ``config.self_metrics_interval_seconds`` the counters (and the receive lag) are also sent as
Turok messages on the metrics queue (each on its partition's), under ``turok.agents.<agent>.<turokd|indexer>.*``.
"""
from __future__ import annotations

import abc
from dataclasses import asdict
from typing import Any, Callable, ClassVar, Generator, Optional, Protocol, TypeVar

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import make_client
from turok_core.runtime.ratelimit import Throttle
from turok_core.runtime.retry import Backoff
from turok_core.runtime.selfmetrics import flatten_counters
from turok_core.runtime.selfmetrics_loop import QueueSelfMetricsSink, SelfMetricsLoop
from turok_core.runtime.threads import start_aws_threadpool
from turok_core.wire.partitions import partition_queue_name
from turok_core.wire.queues import MessageQueue, ReceivedMessage

ERROR_LOG_INTERVAL = 30.0  # seconds between two log lines about the same kind of failure
STATS_LOG_INTERVAL = 60.0
ERROR_BACKOFF = Backoff(base=1.0, cap=30.0)  # a failed poll is retried after this

T = TypeVar("T")


def started(value: Optional[T]) -> T:
    """``value``, which the service sets when it starts (or a test injected); an error before."""
    if value is None:
        raise RuntimeError("the service has not started")
    return value


class ConsumerCounters(Protocol):
    """What the base reads of a subclass's counters: a dataclass with an ``errors`` count."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    errors: int


class RateLimitedLog:
    """At most one error line per kind of failure every ``interval`` seconds, counting the rest."""

    def __init__(self, logger: Logger, clock: Callable[[], float], interval: float = ERROR_LOG_INTERVAL) -> None:
        self._log = logger
        self._throttle = Throttle(clock, interval)

    def error(self, kind: str, format: str, **kwargs: object) -> None:
        if not self._throttle.ready(kind):
            return
        suppressed = self._throttle.suppressed(kind)
        if suppressed:
            format += " ({suppressed} similar failures not logged)"
        self._log.error(format, suppressed=suppressed, **kwargs)


class QueueConsumerService(service.Service, metaclass=abc.ABCMeta):
    """Base of the SQS consumers. Subclasses set ``name`` and ``counters`` (a dataclass with an
    ``errors`` field), pass their logger, and implement ``pollers``, ``connect`` and ``poll_once``."""

    name: str  # not Service's Optional: log lines, the pool's and self-metric names use it
    counters: ConsumerCounters

    def __init__(self, config: TurokConfig, logger: Logger, reactor: Any = None) -> None:
        # reactor: IReactorTime and IReactorThreads (typed Any: zope interfaces need mypy-zope)
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self._log = logger  # an instance attribute: a Logger read off a class renames itself
        self._reactor = reactor
        self._pool: Optional[ThreadPool] = None  # started by startService
        self._loops: list[defer.Deferred] = []
        self._stats_call: Optional[task.LoopingCall] = None
        self._errors = RateLimitedLog(logger, reactor.seconds)
        self._receive_lag = 0.0  # the oldest received message's age this self-metrics interval
        self._self_metrics: Optional[SelfMetricsLoop] = None

    @property
    def pool_size(self) -> int:
        """Threads of the AWS pool (a consumer long-polling several queues needs more)."""
        return self.config.aws_threads

    @property
    @abc.abstractmethod
    def pollers(self) -> int:
        """How many poll loops run at once."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Create the AWS clients not injected by a test, and log what the service serves."""

    @abc.abstractmethod
    def poll_once(self) -> defer.Deferred:
        """One receive → work → delete round."""

    def startService(self) -> None:
        super().startService()
        self._pool = self._start_pool(self.pool_size, "aws")
        self.connect()
        self.start_polling()
        self._stats_call = task.LoopingCall(self._log_stats)
        self._stats_call.clock = self._reactor
        self._stats_call.start(STATS_LOG_INTERVAL, now=False)
        self._start_self_metrics()

    def start_polling(self) -> None:
        """Start the ``pollers`` loops of ``poll_once`` (a subclass polling several queues overrides it)."""
        self._loops = [self._poll_loop(number) for number in range(max(1, self.pollers))]

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._stats_call is not None and self._stats_call.running:
            self._stats_call.stop()
        if self._self_metrics is not None:
            self._self_metrics.stop()
        loops, self._loops = self._loops, []
        done = defer.DeferredList(loops, consumeErrors=True)
        done.addCallback(lambda _: self.finish_work())
        done.addCallback(lambda _: self._log_stats())
        return done

    def finish_work(self) -> Optional[defer.Deferred]:
        """What stopping does once the loops have ended, before the counters are logged (a
        Deferred it waits for, or None: this default). It must not fail."""
        return None

    # --- self-metrics: turok.agents.<agent>.<turokd|indexer>.*, sent as Turok messages on
    # config.queue_name (these services have no window buffer of their own)
    @property
    def agent_service(self) -> str:
        """The service's node in its self-metric names: ``turokd``, ``indexer``."""
        return self.name.removeprefix("turok-")

    def note_received(self, messages: list[ReceivedMessage]) -> None:
        """Track the receive lag: the age of the oldest message of a received batch."""
        sent = [m.sent_timestamp for m in messages if m.sent_timestamp is not None]
        if sent:
            self._receive_lag = max(self._receive_lag, self._reactor.seconds() - min(sent), 0.0)

    def self_metrics_gauges(self) -> dict[str, float]:
        """Current sizes reported as gauges; the lag is the interval's worst, then reset."""
        lag, self._receive_lag = self._receive_lag, 0.0
        return {"queue_lag_seconds": lag}

    def _start_self_metrics(self) -> None:
        config = self.config
        sink = QueueSelfMetricsSink(
            config, lambda partition=0: MessageQueue.from_config(make_client("sqs", config), config,
                                                                 partition_queue_name(config, partition)),
            self._in_pool, self._reactor.seconds, self._log)
        self._self_metrics = SelfMetricsLoop(
            config, self.agent_service, lambda: (flatten_counters(self.counters), self.self_metrics_gauges()),
            sink, self._reactor, self._log)
        self._self_metrics.start()

    def _start_pool(self, size: int, purpose: str) -> ThreadPool:
        """A thread pool of ``size`` named ``<service>-<purpose>``, stopped with the reactor."""
        return start_aws_threadpool(self._reactor, size, f"{self.name}-{purpose}")

    def _in_pool(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        return self._in_given_pool(started(self._pool), function, *args, **kwargs)

    def _in_given_pool(self, pool: ThreadPool, function: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> defer.Deferred:
        return deferToThreadPool(self._reactor, pool, function, *args, **kwargs)

    @defer.inlineCallbacks
    def _poll_loop(self, number: int, poll: Optional[Callable[[], defer.Deferred]] = None,
                   alive: Callable[[], bool] = lambda: True) -> Generator[defer.Deferred, Any, None]:
        """Call ``poll`` (default ``poll_once``) while the service runs and ``alive()`` holds."""
        poll = poll or self.poll_once
        failures = 0
        while self.running and alive():
            try:
                yield poll()
                failures = 0
            except Exception as exc:  # keep polling whatever went wrong; SQS redelivers
                failures += 1
                self.counters.errors += 1
                self._errors.error("poll", "{service} poller {number}: {error!r}",
                                   service=self.name, number=number, error=exc)
                delay = ERROR_BACKOFF.delay(failures - 1)
                yield task.deferLater(self._reactor, delay, lambda: None)

    def _log_stats(self) -> None:
        self._log.info("{service} counters: {counters}", service=self.name, counters=asdict(self.counters))
