"""turokd: Turok messages from SQS, aggregated into DynamoDB blocks; new names to the index queue.

``config.turokd_pollers`` loops each run, one batch at a time: long-poll the metrics queue, store
the batch (``ingest.process_batch``: base slots, then their rollups into the coarser archives of
the schemas in the config), delete the messages whose data is stored, and announce
metric names this process has not announced yet on the index queue. Undecodable bodies are
logged and left alone, so SQS's redrive policy moves them to the dead-letter queue. Every boto3
call runs in the service's AWS thread pool, never on the reactor thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from ..announcements import encode_announcements
from ..aws import make_client
from ..config import TurokConfig
from ..ingest import Announcer, BatchResult, process_batch
from ..queues import SQS_BATCH_ENTRIES, MessageQueue
from ..schemas import SchemaSet, load_schemas
from ..storage import BlockStore
from .consumer import QueueConsumerService, RateLimitedLog

log = Logger(namespace="turok.turokd")

REJECT_LOG_INTERVAL = 10.0


@dataclass
class TurokdCounters:
    messages_received: int = 0  # SQS messages
    bodies_rejected: int = 0  # undecodable bodies, left for the dead-letter queue
    turok_messages: int = 0  # Turok messages in the accepted bodies
    slots_written: int = 0
    rollup_slots_written: int = 0  # coarse slots recomputed into the coarser archives
    items_written: int = 0
    items_unchanged: int = 0  # blocks a redelivery left as they were (not rewritten)
    write_units: int = 0
    tables_created: int = 0
    announcements_sent: int = 0  # index-queue bodies
    names_announced: int = 0
    errors: int = 0  # failed rounds (nothing acknowledged; SQS redelivers)


class TurokdService(QueueConsumerService):
    """turokd's poll loops; ``stopService`` waits until each has finished its batch."""

    name = "turokd"

    def __init__(self, config: TurokConfig, reactor=None, store: Optional[BlockStore] = None,
                 queue: Optional[MessageQueue] = None, index_queue: Optional[MessageQueue] = None,
                 schemas: Optional[SchemaSet] = None) -> None:
        super().__init__(config, log, reactor)
        self.counters = TurokdCounters()
        self.announcer = Announcer()
        self._store = store
        self._queue = queue
        self._index_queue = index_queue
        # read at construction, so twistd refuses to start on invalid schema files
        self.schemas = schemas if schemas is not None else load_schemas(config)
        self._rejections = RateLimitedLog(log, self._reactor.seconds, REJECT_LOG_INTERVAL)

    @property
    def pollers(self) -> int:
        return self.config.turokd_pollers

    def connect(self) -> None:
        config = self.config
        if self._store is None:
            self._store = BlockStore(make_client("dynamodb", config), config)
        if self._queue is None or self._index_queue is None:
            sqs = make_client("sqs", config)
            self._queue = self._queue or MessageQueue.from_config(sqs, config, config.queue_name)
            self._index_queue = self._index_queue or MessageQueue.from_config(sqs, config, config.index_queue_name)
        log.info("turokd: {pollers} poller(s) on queue {queue}, tables {prefix}{joiner}…, "
                 "announcing to {index_queue}", pollers=config.turokd_pollers, queue=config.queue_name,
                 prefix=config.table_prefix, joiner=config.table_joiner, index_queue=config.index_queue_name)

    @defer.inlineCallbacks
    def poll_once(self):
        """One receive → store → delete → announce round."""
        config = self.config
        received = yield self._in_pool(self._queue.receive, SQS_BATCH_ENTRIES, config.receive_wait_seconds,
                                       config.visibility_timeout_seconds)
        if not received:
            return
        self.counters.messages_received += len(received)
        self.note_received(received)
        result: BatchResult = yield self._in_pool(process_batch, received, self._store, self.schemas)
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
        counters.rollup_slots_written += result.rollup_slots
        counters.items_written += stats.items_written
        counters.items_unchanged += stats.items_unchanged
        counters.write_units += stats.write_units
        counters.tables_created += stats.tables_created


def make_turokd_service(config: TurokConfig) -> service.IService:
    """The turokd service (``twistd -n turokd --config FILE``)."""
    return TurokdService(config)
