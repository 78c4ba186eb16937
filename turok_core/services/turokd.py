"""turokd: Turok messages from SQS, aggregated into DynamoDB blocks; new names to the index queue.

``config.turokd_pollers`` loops each run, one batch at a time: long-poll the metrics queue, store
the batch (``ingest.process_batch``), delete the messages whose data is stored, and announce
metric names this process has not announced yet on the index queue. Undecodable bodies are
logged and left alone, so SQS's redrive policy moves them to the dead-letter queue. Every boto3
call runs in the service's AWS thread pool, never on the reactor thread.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..announcements import encode_announcements
from ..aws import make_client
from ..config import TurokConfig
from ..ingest import Announcer, BatchResult, process_batch
from ..queues import SQS_BATCH_ENTRIES, MessageQueue
from ..storage import BlockStore
from .indexer import RateLimitedLog
from .threads import start_aws_threadpool

log = Logger(namespace="turok.turokd")

STATS_LOG_INTERVAL = 60.0
MAX_ERROR_BACKOFF = 30.0
REJECT_LOG_INTERVAL = 10.0


@dataclass
class TurokdCounters:
    messages_received: int = 0  # SQS messages
    bodies_rejected: int = 0  # undecodable bodies, left for the dead-letter queue
    turok_messages: int = 0  # Turok messages in the accepted bodies
    slots_written: int = 0
    items_written: int = 0
    items_unchanged: int = 0  # blocks a redelivery left as they were (not rewritten)
    write_units: int = 0
    tables_created: int = 0
    announcements_sent: int = 0  # index-queue bodies
    names_announced: int = 0
    errors: int = 0  # failed rounds (nothing acknowledged; SQS redelivers)


class TurokdService(service.Service):
    """The poll loops; ``stopService`` waits until every loop has finished its current batch."""

    name = "turokd"

    def __init__(self, config: TurokConfig, reactor=None, store: Optional[BlockStore] = None,
                 queue: Optional[MessageQueue] = None, index_queue: Optional[MessageQueue] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.counters = TurokdCounters()
        self.announcer = Announcer()
        self._reactor = reactor
        self._store = store
        self._queue = queue
        self._index_queue = index_queue
        self._pool = None
        self._loops: list[defer.Deferred] = []
        self._stats_call: Optional[task.LoopingCall] = None
        self._errors = RateLimitedLog(log, reactor)
        self._rejections = RateLimitedLog(log, reactor, REJECT_LOG_INTERVAL)

    def startService(self) -> None:
        super().startService()
        config = self.config
        self._pool = start_aws_threadpool(self._reactor, config.aws_threads, "turokd-aws")
        if self._store is None:
            self._store = BlockStore(make_client("dynamodb", config), config)
        sqs = None
        if self._queue is None or self._index_queue is None:
            sqs = make_client("sqs", config)
        if self._queue is None:
            self._queue = MessageQueue.from_config(sqs, config, config.queue_name)
        if self._index_queue is None:
            self._index_queue = MessageQueue.from_config(sqs, config, config.index_queue_name)
        log.info("turokd: {pollers} poller(s) on queue {queue}, tables {prefix}{joiner}…, "
                 "announcing to {index_queue}", pollers=config.turokd_pollers, queue=config.queue_name,
                 prefix=config.table_prefix, joiner=config.table_joiner, index_queue=config.index_queue_name)
        self._loops = [self._poll_loop(number) for number in range(max(1, config.turokd_pollers))]
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
                self._errors.error("poll", "turokd poller {number}: {error!r}", number=number, error=exc)
                delay = min(MAX_ERROR_BACKOFF, 0.5 * 2 ** min(failures, 8))
                yield task.deferLater(self._reactor, delay, lambda: None)

    @defer.inlineCallbacks
    def poll_once(self):
        """One receive → store → delete → announce round."""
        config = self.config
        received = yield self._in_pool(self._queue.receive, SQS_BATCH_ENTRIES, config.receive_wait_seconds,
                                       config.visibility_timeout_seconds)
        if not received:
            return
        self.counters.messages_received += len(received)
        result: BatchResult = yield self._in_pool(process_batch, received, self._store)
        self._count(result)
        for rejected in result.rejected:
            self._rejections.error(
                "rejected", "turokd: rejected message {id} (receive {count}): {reason}; "
                "left for the dead-letter queue", id=rejected.message_id, count=rejected.receive_count,
                reason=rejected.reason)
        if result.deletable:  # only now is what they carry durable in DynamoDB
            yield self._in_pool(self._queue.delete, result.deletable)
        if result.metrics:
            yield self._announce(result.metrics)

    @defer.inlineCallbacks
    def _announce(self, metrics):
        """Send the names not announced yet; they count as announced only once the send worked."""
        names = self.announcer.new_names(sorted(metrics))
        if not names:
            return
        try:
            bodies = encode_announcements(names, self.config.sqs_max_message_bytes)
            yield self._in_pool(self._index_queue.send, bodies)
        except BaseException:
            self.announcer.announce_failed(names)  # retried with the next batch's names
            raise
        self.announcer.mark_announced(names)
        self.counters.announcements_sent += len(bodies)
        self.counters.names_announced += len(names)

    def _count(self, result: BatchResult) -> None:
        counters, stats = self.counters, result.stats
        counters.bodies_rejected += len(result.rejected)
        counters.turok_messages += result.messages
        counters.slots_written += result.slots
        counters.items_written += stats.items_written
        counters.items_unchanged += stats.items_unchanged
        counters.write_units += stats.write_units
        counters.tables_created += stats.tables_created

    def _log_stats(self) -> None:
        log.info("turokd counters: {counters}", counters=asdict(self.counters))


def make_turokd_service(config: TurokConfig) -> service.IService:
    """The turokd service (``twistd -n turokd --config FILE``)."""
    return TurokdService(config)
