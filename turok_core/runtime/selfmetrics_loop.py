"""The timer behind every service's self-metrics, and the SQS sink of the services without windows.

``SelfMetricsLoop`` calls ``collect`` every ``config.self_metrics_interval_seconds`` and hands the
resulting points (see ``turok_core.runtime.selfmetrics``) to a sink: the gateway's own ``WindowBuffer``,
or, for turokd and the indexer, a ``QueueSelfMetricsSink`` that windows them by the metrics'
schemas and sends the closed windows as Turok messages on ``config.queue_name``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.runtime.ratelimit import Throttle
from turok_core.runtime.selfmetrics import SelfMetricsReporter, metric_prefix, process_counters, process_gauges
from turok_core.windows.buffer import WindowBuffer
from turok_core.wire.codec import encode_messages
from turok_core.wire.partitions import split_by_partition
from turok_core.wire.queues import MessageQueue

PointSink = Callable[[list[str], list[float], list[int]], object]
Collect = Callable[[], tuple[Mapping[str, float], Mapping[str, float]]]  # (counters, gauges)
WARN_INTERVAL = 300.0
MAX_PENDING_MESSAGES = 10_000  # self-metrics waiting for a send; the oldest go first


class SelfMetricsLoop:
    """Every interval: ``collect()`` → counter increases and gauges → ``sink(names, values, ts)``."""

    def __init__(self, config: TurokConfig, service: str, collect: Collect, sink: PointSink, reactor: Any,
                 logger: Logger, clock: Optional[Callable[[], float]] = None) -> None:
        self.interval = config.self_metrics_interval_seconds
        self.reporter = SelfMetricsReporter(metric_prefix(config, service))
        self._collect = collect
        self._sink = sink
        self._reactor = reactor  # an IReactorTime (typed Any: zope interfaces need mypy-zope)
        self._clock = clock or reactor.seconds
        self._log = logger
        self._warn = Throttle(self._clock, WARN_INTERVAL)
        self._call: Optional[task.LoopingCall] = None

    def start(self) -> None:
        """Start the timer (nothing when the interval is 0: self-metrics are off)."""
        if self.interval <= 0:
            return
        self._call = task.LoopingCall(self.record)
        self._call.clock = self._reactor
        self._call.start(self.interval, now=False)

    def stop(self) -> None:
        if self._call is not None and self._call.running:
            self._call.stop()

    def record(self) -> None:
        """Take one snapshot now and hand its points to the sink; never raises."""
        try:
            counters, gauges = self._collect()
            points = self.reporter.report(self._clock(), {**counters, **process_counters()},
                                          {**gauges, **process_gauges()})
            self._sink(*points)
        except Exception as exc:  # self-metrics must never take the service down
            if self._warn.ready("record"):
                self._log.warn("self-metrics under {prefix} not recorded: {error!r}",
                               prefix=self.reporter.prefix, error=exc)


class QueueSelfMetricsSink:
    """Windows self-metric points by their schemas and sends the closed windows to SQS.

    The buffer has no grace (the points are local, never late), so a point stamped in slot ``s``
    goes out at the first interval after ``s + step``: one message per counter and slot.
    ``run_in_pool(function, *args)`` runs the blocking send (the service's AWS thread pool);
    ``make_queue()`` gives the ``MessageQueue`` on ``config.queue_name``, called in the pool at first use;
    with ``queue_partitions > 1``, ``make_queue(p)`` gives partition ``p``'s queue, and each
    self-metric goes to its own partition's (``turok_core.wire.partitions``).
    """

    def __init__(self, config: TurokConfig, make_queue: Callable[..., MessageQueue],
                 run_in_pool: Callable[..., defer.Deferred],
                 clock: Callable[[], float], logger: Logger) -> None:
        schemas = load_schemas(config)

        def policy(metric: str) -> tuple[int, str]:
            found = schemas.policy_for(metric)
            return found.step, found.aggregation_type

        self.buffer = WindowBuffer(policy, 0)
        self.messages_sent = 0
        self._config = config
        self._make_queue = make_queue
        self._queues: dict[int, MessageQueue] = {}
        self._run = run_in_pool
        self._clock = clock
        self._log = logger
        self._warn = Throttle(clock, WARN_INTERVAL)
        self._pending: list[TurokMessage] = []
        self._sending = False

    def __call__(self, names: list[str], values: list[float], timestamps: list[int]) -> Optional[defer.Deferred]:
        """Buffer the points, then send every closed window (unless a send is still running)."""
        self.buffer.add_points(names, values, timestamps)
        self._pending.extend(self.buffer.release(self._clock()))
        del self._pending[:-MAX_PENDING_MESSAGES]
        if self._sending or not self._pending:
            return None
        messages, self._pending = self._pending, []
        self._sending = True
        sending = self._run(self._send, messages)
        sending.addCallbacks(self._sent, self._failed, errbackArgs=(messages,))
        return sending

    def _send(self, messages: list[TurokMessage]) -> int:
        partitions = self._config.queue_partitions
        for partition, group in split_by_partition(messages, [m.metric for m in messages], partitions).items():
            queue = self._queues.get(partition)
            if queue is None:
                queue = self._queues[partition] = self._make_queue() if partitions <= 1 else self._make_queue(partition)
            queue.send(encode_messages(group, self._config.sqs_max_message_bytes))
        return len(messages)

    def _sent(self, count: int) -> None:
        self._sending = False
        self.messages_sent += count

    def _failed(self, failure: Failure, messages: list[TurokMessage]) -> None:
        self._sending = False
        self._pending[:0] = messages  # tried again at the next interval
        del self._pending[:-MAX_PENDING_MESSAGES]
        if self._warn.ready("send"):
            self._log.warn("self-metrics: sending {count} message(s) to {queue} failed: {error!r}",
                           count=len(messages), queue=self._config.queue_name, error=failure.value)
