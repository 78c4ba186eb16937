"""turokd: Turok messages from SQS, held as blocks, written once to DynamoDB; new names announced.

``config.turokd_pollers`` loops each run, one batch at a time: long-poll the metrics queue, put
the batch's slots into the open blocks (``BlockWriter.hold``), extend the visibility of
messages that must wait longer than the queue's timeout for their blocks, and announce metric
names this process has not announced yet on the index queue. Every ``block_tick_seconds`` a tick
writes the blocks that have closed, each in one merge, recomputes the coarse blocks closing with
them, and only then deletes the messages whose data is all stored. Undecodable bodies are logged
and left alone, so SQS's redrive policy moves them to the dead-letter queue. On stop, every open
block is written and its messages deleted. The finder reads the held slots over the cache query
port (``cache_query.py``). Every boto3 call runs in the service's AWS thread pool.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Optional

from twisted.internet import defer, task
from twisted.logger import Logger

from turok_core.model.config import TurokConfig
from turok_core.model.schemas import SchemaSet, load_schemas
from turok_core.runtime.aws import make_client
from turok_core.runtime.cache_server import cache_site
from turok_core.runtime.consumer import QueueConsumerService, RateLimitedLog, started
from turok_core.storage.tables import BlockStore
from turok_core.turokd.announcer import Announcer
from turok_core.turokd.block_writer import BlockWriter, CloseResult
from turok_core.turokd.decode import DecodedBatch
from turok_core.wire.announcements import encode_announcements
from turok_core.wire.queues import SQS_BATCH_ENTRIES, MessageQueue, Queue

log = Logger(namespace="turok.turokd")

REJECT_LOG_INTERVAL = 10.0


VISIBILITY_MARGIN = 60  # seconds a held message stays invisible past the time it becomes deletable


@dataclass
class TurokdCounters:
    messages_received: int = 0  # SQS messages
    bodies_rejected: int = 0  # undecodable bodies, left for the dead-letter queue
    turok_messages: int = 0  # Turok messages in the accepted bodies
    slots_received: int = 0  # slot values put into open blocks
    blocks_written: int = 0  # base blocks written (each once when it closes, unless data came late)
    slots_written: int = 0
    rollup_slots_written: int = 0  # coarse slots recomputed into the coarser archives
    items_written: int = 0
    items_unchanged: int = 0  # blocks a redelivery left as they were (not rewritten)
    write_units: int = 0
    tables_created: int = 0
    messages_deleted: int = 0
    visibility_extensions: int = 0  # held messages given a longer visibility timeout
    receive_pauses: int = 0  # poll rounds skipped because max_held_messages were held
    announcements_sent: int = 0  # index-queue bodies
    names_announced: int = 0
    cache_queries: int = 0  # finder queries for held slots
    cache_queries_refused: int = 0  # malformed ones
    errors: int = 0  # failed rounds or ticks (nothing acknowledged; SQS redelivers)


class TurokdService(QueueConsumerService):
    """turokd's poll loops and block tick; ``stopService`` writes what it holds, then returns."""

    name = "turokd"
    counters: TurokdCounters

    def __init__(self, config: TurokConfig, reactor: Any = None, store: Optional[BlockStore] = None,
                 queue: Optional[Queue] = None, index_queue: Optional[Queue] = None,
                 schemas: Optional[SchemaSet] = None, clock: Optional[Callable[[], float]] = None) -> None:
        super().__init__(config, log, reactor)
        self.counters = TurokdCounters()
        self.announcer = Announcer()
        self.clock = clock if clock is not None else self._reactor.seconds
        self._store = store
        self._queue = queue
        self._index_queue = index_queue
        # read at construction, so twistd refuses to start on invalid schema files
        self.schemas = schemas if schemas is not None else load_schemas(config)
        self._rejections = RateLimitedLog(log, self._reactor.seconds, REJECT_LOG_INTERVAL)
        self._writer: Optional[BlockWriter] = None  # made by connect, at start
        self._tick_call: Optional[task.LoopingCall] = None
        self._ticking: Optional[defer.Deferred] = None
        # an IListeningPort once listening (typed Any: zope interfaces need mypy-zope)
        self._cache_port: Any = None
        # held receipt handle → (when its blocks are all written, when SQS would show it again)
        self._visible_until: dict[str, tuple[float, float]] = {}
        self._extending = False

    @property
    def pollers(self) -> int:
        return self.config.turokd_pollers

    @property
    def writer(self) -> BlockWriter:
        """The open blocks and their writing; there once the service has started."""
        return started(self._writer)

    @property
    def queue(self) -> Queue:
        """The metrics queue: injected, or made at start."""
        return started(self._queue)

    @property
    def index_queue(self) -> Queue:
        """Where new names are announced: injected, or made at start."""
        return started(self._index_queue)

    def connect(self) -> None:
        config = self.config
        if self._store is None:
            self._store = BlockStore(make_client("dynamodb", config), config)
        if self._queue is None or self._index_queue is None:
            sqs = make_client("sqs", config)
            self._queue = self._queue or MessageQueue.from_config(sqs, config, config.queue_name)
            self._index_queue = self._index_queue or MessageQueue.from_config(sqs, config, config.index_queue_name)
        self._writer = BlockWriter(self._store, config, self.schemas, self.clock)
        log.info("turokd: {pollers} poller(s) on queue {queue}, tables {prefix}{joiner}…, "
                 "{slots}-slot blocks written {delay}s after they end, announcing to {index_queue}",
                 pollers=config.turokd_pollers, queue=config.queue_name, prefix=config.table_prefix,
                 joiner=config.table_joiner, slots=config.block_slots, delay=config.block_close_delay_seconds,
                 index_queue=config.index_queue_name)

    def startService(self) -> None:
        super().startService()
        site = cache_site(self.writer.open.points, self._count_cache_query)
        port = self._reactor.listenTCP(self.config.cache_port, site, interface=self.config.cache_interface)
        self._cache_port = port
        log.info("turokd: cache queries on {interface}:{port}", interface=self.config.cache_interface,
                 port=port.getHost().port)
        self._tick_call = task.LoopingCall(self._tick)
        self._tick_call.clock = self._reactor
        self._tick_call.start(self.config.block_tick_seconds, now=False)

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred, Any, None]:
        """Stop polling, let a running tick finish, then write every open block and delete."""
        if self._tick_call is not None and self._tick_call.running:
            self._tick_call.stop()
        yield super().stopService()
        if self._ticking is not None:
            yield self._ticking
        try:
            result = yield self._in_pool(self.writer.close_all)
            yield self._after_close(result)
            log.info("turokd: wrote {blocks} open block(s) at shutdown", blocks=result.blocks)
        except Exception as exc:
            self.counters.errors += 1
            log.error("turokd: writing open blocks at shutdown failed ({error!r}); their messages "
                      "were not deleted, so SQS redelivers them", error=exc)
        if self._cache_port is not None:
            yield self._cache_port.stopListening()
        self._log_stats()  # the counters again, with the shutdown's writes

    @defer.inlineCallbacks
    def poll_once(self) -> Generator[defer.Deferred, Any, None]:
        """One receive → hold → announce round (deleting waits for the blocks' tick)."""
        config = self.config
        if self.writer.open.held_messages >= config.max_held_messages:
            # blocks cannot be written (DynamoDB down?): hold no more until ticks catch up
            self.counters.receive_pauses += 1
            yield task.deferLater(self._reactor, config.block_tick_seconds, lambda: None)
            return
        received = yield self._in_pool(self.queue.receive, SQS_BATCH_ENTRIES, config.receive_wait_seconds,
                                       config.visibility_timeout_seconds)
        if not received:
            return
        self.counters.messages_received += len(received)
        self.note_received(received)
        batch: DecodedBatch = yield self._in_pool(self.writer.hold, received)
        self._count_batch(batch)
        for rejected in batch.rejected:
            self._rejections.error(
                "rejected", "turokd: rejected message {id} (receive {count}): {reason}; "
                "left for the dead-letter queue", id=rejected.message_id, count=rejected.receive_count,
                reason=rejected.reason)
        if batch.duplicates:  # a twin in the same batch carries the data
            yield self._in_pool(self.queue.delete, batch.duplicates)
        yield self._extend_visibility(batch)
        if batch.windows:
            yield self._announce(batch.metrics)

    def _extend_visibility(self, batch: DecodedBatch) -> defer.Deferred:
        """Track the batch's held messages; those that must wait past their timeout get a longer one."""
        now = self.clock()
        timeout = self.config.visibility_timeout_seconds
        for deadline, receipt in batch.held:
            self._visible_until[receipt] = (deadline, now + timeout)
        return self._extend([receipt for deadline, receipt in batch.held
                             if deadline - now + VISIBILITY_MARGIN > timeout], now)

    def _extend_expiring(self) -> defer.Deferred:
        """Held messages about to become visible again (their blocks not written yet: a slow or
        failing write) get more time, so SQS neither redelivers them nor counts them toward the
        dead-letter queue while their data is in memory."""
        now = self.clock()
        soon = now + max(VISIBILITY_MARGIN / 2, 2 * self.config.block_tick_seconds)
        return self._extend([receipt for receipt, (_deadline, until) in self._visible_until.items()
                             if until <= soon], now)

    def _extend(self, receipts: list[str], now: float) -> defer.Deferred:
        if not receipts:
            return defer.succeed(None)
        longer = []
        for receipt in receipts:
            deadline, _until = self._visible_until[receipt]
            seconds = max(deadline - now, 0) + VISIBILITY_MARGIN
            self._visible_until[receipt] = (deadline, now + seconds)
            longer.append((receipt, seconds))
        self.counters.visibility_extensions += len(longer)
        return self._in_pool(self.queue.change_visibility, longer)

    def _tick(self) -> None:
        """Write what has closed (a tick still writing is not doubled), and keep held messages
        invisible, also while a slow or failing write is in progress."""
        if self._writer is None:  # not started
            return
        if not self._extending:
            self._extending = True
            extended = self._extend_expiring()
            extended.addErrback(lambda failure: self._errors.error(
                "visibility", "turokd: extending held messages' visibility failed: {error!r}", error=failure.value))
            extended.addBoth(lambda _: setattr(self, "_extending", False))
        if self._ticking is not None:
            return
        ticking = self._close_due()
        if not ticking.called:
            self._ticking = ticking
            ticking.addBoth(self._tick_done)

    def _tick_done(self, result: object) -> object:
        self._ticking = None
        return result

    @defer.inlineCallbacks
    def _close_due(self) -> Generator[defer.Deferred, Any, None]:
        try:
            result: CloseResult = yield self._in_pool(self.writer.close)
            yield self._after_close(result)
        except Exception as exc:  # blocks stay open and messages held: the next tick retries
            self.counters.errors += 1
            self._errors.error("tick", "turokd: writing closed blocks failed: {error!r}; retrying", error=exc)

    @defer.inlineCallbacks
    def _after_close(self, result: CloseResult) -> Generator[defer.Deferred, Any, None]:
        self._count_close(result)
        if result.deletable:  # only now is what they carry durable in DynamoDB
            yield self._in_pool(self.queue.delete, result.deletable)
            self.counters.messages_deleted += len(result.deletable)
            for receipt in result.deletable:
                self._visible_until.pop(receipt, None)

    @defer.inlineCallbacks
    def _announce(self, metrics: Iterable[str]) -> Generator[defer.Deferred, Any, None]:
        """Send the names not announced yet; they count as announced only once the send worked."""
        names = self.announcer.new_names(sorted(metrics))
        if not names:
            return
        try:
            bodies = encode_announcements(names, self.config.sqs_max_message_bytes)
            yield self._in_pool(self.index_queue.send, bodies)
        except BaseException:
            self.announcer.announce_failed(names)  # retried with the next batch's names
            raise
        self.announcer.mark_announced(names)
        self.counters.announcements_sent += len(bodies)
        self.counters.names_announced += len(names)

    def self_metrics_gauges(self) -> dict[str, float]:
        gauges = super().self_metrics_gauges()
        if self._writer is not None:
            gauges["open_blocks"] = self._writer.open.open_blocks
            gauges["held_messages"] = self._writer.open.held_messages
        return gauges

    def _count_cache_query(self, answered: bool) -> None:
        if answered:
            self.counters.cache_queries += 1
        else:
            self.counters.cache_queries_refused += 1

    def _count_batch(self, batch: DecodedBatch) -> None:
        counters = self.counters
        counters.bodies_rejected += len(batch.rejected)
        counters.turok_messages += batch.messages
        counters.slots_received += batch.slot_count

    def _count_close(self, result: CloseResult) -> None:
        counters, stats = self.counters, result.stats
        counters.blocks_written += result.blocks
        counters.slots_written += result.slots
        counters.rollup_slots_written += result.rollup_slots
        counters.items_written += stats.items_written
        counters.items_unchanged += stats.items_unchanged
        counters.write_units += stats.write_units
        counters.tables_created += stats.tables_created


def make_turokd_service(config: TurokConfig) -> TurokdService:
    """The turokd service (``twistd -n turokd --config FILE``)."""
    return TurokdService(config)
