"""turok-indexer: announced metric names from the index queue into the sharded S3 index.

``config.indexer_pollers`` loops each long-poll the index queue, decode the announcements of
a batch, add all their names with one ``IndexStore.add_names`` call and delete the messages only
once the index holds them. A body that is no announcement is logged and left alone: SQS
redelivers it until its redrive policy moves it to the dead-letter queue. Every boto3 call runs in
the service's AWS thread pool.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..announcements import decode_announcement
from ..aws import make_client
from ..config import TurokConfig
from ..index_store import IndexStore
from ..message import MessageError
from ..queues import SQS_BATCH_ENTRIES, MessageQueue
from .threads import start_aws_threadpool

log = Logger(namespace="turok.indexer")

ERROR_LOG_INTERVAL = 30.0  # seconds between two log lines about the same kind of failure
STATS_LOG_INTERVAL = 60.0
MAX_ERROR_BACKOFF = 30.0


@dataclass
class IndexerCounters:
    messages: int = 0  # announcement messages received and decoded
    bad_messages: int = 0  # bodies that were no announcement (left for the dead-letter queue)
    names_announced: int = 0
    names_added: int = 0  # names new to the index
    names_rejected: int = 0  # names that cannot be indexed
    shard_writes: int = 0
    conflicts_retried: int = 0
    errors: int = 0  # failed receive/index/delete rounds


class RateLimitedLog:
    """At most one line per kind of failure every ``interval`` seconds, counting the rest."""

    def __init__(self, logger: Logger, clock, interval: float = ERROR_LOG_INTERVAL) -> None:
        self._log = logger
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, kind: str, format: str, **kwargs) -> None:
        now = self._clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            format += " ({suppressed} similar failures not logged)"
        self._log.error(format, suppressed=suppressed, **kwargs)


class IndexerService(service.Service):
    """The poll loops; ``stopService`` waits until every loop has finished its current batch."""

    name = "turok-indexer"

    def __init__(self, config: TurokConfig, reactor=None, store: Optional[IndexStore] = None,
                 queue: Optional[MessageQueue] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.counters = IndexerCounters()
        self._reactor = reactor
        self._store = store
        self._queue = queue
        self._pool = None
        self._loops: list[defer.Deferred] = []
        self._stats_call: Optional[task.LoopingCall] = None
        self._errors = RateLimitedLog(log, reactor)

    def startService(self) -> None:
        super().startService()
        config = self.config
        self._pool = start_aws_threadpool(self._reactor, config.aws_threads, "turok-indexer-aws")
        if self._store is None:
            self._store = IndexStore(make_client("s3", config), config)
        if self._queue is None:
            self._queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
        log.info("turok-indexer: {pollers} poller(s) on queue {queue}, index s3://{bucket}/{prefix}",
                 pollers=config.indexer_pollers, queue=config.index_queue_name,
                 bucket=config.index_bucket, prefix=config.index_prefix)
        self._loops = [self._poll_loop(number) for number in range(max(1, config.indexer_pollers))]
        self._stats_call = task.LoopingCall(self._log_stats)
        self._stats_call.clock = self._reactor
        self._stats_call.start(STATS_LOG_INTERVAL, now=False)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._stats_call is not None and self._stats_call.running:
            self._stats_call.stop()
        loops, self._loops = self._loops, []
        done = defer.DeferredList(loops, consumeErrors=True)
        done.addCallback(lambda _: self._log_stats())
        return done

    def _in_pool(self, function, *args, **kwargs) -> defer.Deferred:
        return deferToThreadPool(self._reactor, self._pool, function, *args, **kwargs)

    @defer.inlineCallbacks
    def _poll_loop(self, number: int):
        failures = 0
        while self.running:
            try:
                yield self.poll_once()
                failures = 0
            except Exception as exc:  # keep polling whatever went wrong; SQS redelivers
                failures += 1
                self.counters.errors += 1
                self._errors.error("poll", "turok-indexer poller {number}: {error!r}", number=number, error=exc)
                delay = min(MAX_ERROR_BACKOFF, 0.5 * 2 ** min(failures, 8))
                yield task.deferLater(self._reactor, delay, lambda: None)

    @defer.inlineCallbacks
    def poll_once(self):
        """One receive → index → delete round."""
        config = self.config
        messages = yield self._in_pool(self._queue.receive, SQS_BATCH_ENTRIES, config.receive_wait_seconds,
                                       config.visibility_timeout_seconds)
        if not messages:
            return
        names: list[str] = []
        handles: list[str] = []
        for message in messages:
            try:
                decoded = decode_announcement(message.body)
            except MessageError as exc:
                self.counters.bad_messages += 1
                self._errors.error("bad-message",
                                   "turok-indexer: message {id} (receive {count}) is no announcement: {reason}; "
                                   "left for the dead-letter queue",
                                   id=message.message_id, count=message.receive_count, reason=str(exc))
                continue
            names.extend(decoded)
            handles.append(message.receipt_handle)
        self.counters.messages += len(handles)
        self.counters.names_announced += len(names)
        if names:
            stats = yield self._in_pool(self._store.add_names, names)
            self.counters.names_added += stats.added
            self.counters.names_rejected += stats.rejected
            self.counters.shard_writes += stats.shard_writes
            self.counters.conflicts_retried += stats.conflicts
            if stats.rejected:
                self._errors.error("rejected", "turok-indexer: {count} announced names cannot be indexed",
                                   count=stats.rejected)
        if handles:  # only now is what they carry durable in the index
            yield self._in_pool(self._queue.delete, handles)

    def _log_stats(self) -> None:
        log.info("turok-indexer counters: {counters}", counters=asdict(self.counters))


def make_indexer_service(config: TurokConfig) -> service.IService:
    """The turok-indexer service (``twistd -n turok-indexer --config FILE``)."""
    return IndexerService(config)
