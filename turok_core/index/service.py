"""turok-indexer: announced metric names from the index queue into the sharded S3 index.

``config.indexer_pollers`` loops each long-poll the index queue and decode the announcements of
a batch into one pending batch the loops share (``turok_core.index.coalesce``). A write takes
every pending name at once: one ``IndexStore.add_names`` call, the tagged names also to the tag
index (``turok_core.index.tag_cache``), then it deletes every message whose names it wrote, only
once both indexes hold them (a failed write deletes none: SQS redelivers them all). A write
starts ``config.index_coalesce_seconds`` after the first name it takes arrived, or once the
write before it ended when that is later: a burst of new names spread over many messages and
receives costs one pass over the shards it touches, not one per message, and names reach the
finder that much later. A loop stops receiving while ``MAX_PENDING_NAMES`` names wait.

Then, when the shards an index's update wrote hold more than ``index_shard_target_names``
(``tag_index_shard_target_names``) names on average, or a move of that index is in progress (one
a mover left half done: also checked on the first round after start, which deletes the layouts
a mover killed after its switch left), the indexer moves it to more shards
(``turok_core.index.reshard``) before its next write. A body that is no announcement
is logged and left alone: SQS redelivers it until its redrive policy moves it to the dead-letter
queue. Every boto3 call runs in the service's AWS thread pool; stopping writes what is pending.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer
from twisted.logger import Logger

from turok_core.index.coalesce import PendingNames
from turok_core.index.reshard import move_due, move_shards
from turok_core.index.s3_store import IndexStore
from turok_core.index.store import AddStats, ShardedIndexStore
from turok_core.index.tag_cache import make_tag_store, tagged
from turok_core.model.config import TurokConfig
from turok_core.model.message import MessageError
from turok_core.runtime.aws import make_client
from turok_core.runtime.consumer import QueueConsumerService, started
from turok_core.wire.announcements import decode_announcement
from turok_core.wire.queues import SQS_BATCH_ENTRIES, MessageQueue

log = Logger(namespace="turok.indexer")
# a poll loop stops receiving while this many names wait for a write (each a few dozen bytes)
MAX_PENDING_NAMES = 200_000


@dataclass
class IndexerCounters:
    messages: int = 0  # announcement messages received and decoded
    bad_messages: int = 0  # bodies that were no announcement (left for the dead-letter queue)
    names_announced: int = 0
    names_added: int = 0  # names new to the index
    names_rejected: int = 0  # names that cannot be indexed
    tagged_added: int = 0  # tagged series new to the tag index
    shard_writes: int = 0  # of both indexes
    conflicts_retried: int = 0
    moves: int = 0  # moves to more shards this indexer took part in (started, joined or finished)
    index_writes: int = 0  # writes of the pending names (each one add_names call per index)
    errors: int = 0  # failed receive/index/delete rounds and writes


class IndexerService(QueueConsumerService):
    """The indexer's poll loops and its coalesced writes; ``stopService`` waits until each loop
    has finished its round, then writes what is pending."""

    name = "turok-indexer"
    counters: IndexerCounters

    def __init__(self, config: TurokConfig, reactor: Any = None, store: Optional[ShardedIndexStore] = None,
                 queue: Optional[MessageQueue] = None, tag_store: Optional[ShardedIndexStore] = None) -> None:
        super().__init__(config, log, reactor)
        self.counters = IndexerCounters()
        self._store = store
        self._tag_store = tag_store
        self._queue = queue
        self._moving: set[str] = set()  # the indexes one of our pollers is moving
        self._moves_checked = False  # whether a round looked for a move left half done
        self._pending = PendingNames()  # what the next write takes
        self._writing = False  # a write is in flight
        self._write_ended: list[defer.Deferred] = []  # fired when the write in flight ends
        self._write_call: Any = None  # the IDelayedCall of the next write, once scheduled

    @property
    def pollers(self) -> int:
        return self.config.indexer_pollers

    @property
    def store(self) -> ShardedIndexStore:
        """The index: injected, or made at start."""
        return started(self._store)

    @property
    def tag_store(self) -> ShardedIndexStore:
        """The tag index: injected, or made at start."""
        return started(self._tag_store)

    @property
    def queue(self) -> MessageQueue:
        """The index queue: injected, or made at start."""
        return started(self._queue)

    def connect(self) -> None:
        config = self.config
        if self._store is None:
            self._store = IndexStore(make_client("s3", config), config)
        if self._tag_store is None:
            self._tag_store = make_tag_store(make_client("s3", config), config)
        if self._queue is None:
            self._queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
        log.info("turok-indexer: {pollers} poller(s) on queue {queue}, index s3://{bucket}/{prefix}, "
                 "tag index s3://{bucket}/{tags}",
                 pollers=config.indexer_pollers, queue=config.index_queue_name,
                 bucket=config.index_bucket, prefix=config.index_prefix, tags=config.tag_index_prefix)

    @defer.inlineCallbacks
    def poll_once(self) -> Generator[defer.Deferred, Any, None]:
        """One receive round: its announcements join the pending names (written by ``write_pending``)."""
        config = self.config
        if not self._moves_checked:  # at start, before the first long poll
            self._moves_checked = True
            for label, store in (("index", self._store), ("tag index", self._tag_store)):
                if store is not None:
                    yield self._maybe_move(label, store, None, 0)
        if len(self._pending) >= MAX_PENDING_NAMES:  # enough for one write: take no more before it
            yield self.write_pending()
        messages = yield self._in_pool(self.queue.receive, SQS_BATCH_ENTRIES, config.receive_wait_seconds,
                                       config.visibility_timeout_seconds)
        if not messages:
            return
        self.note_received(messages)
        now = self._reactor.seconds()
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
            self._pending.add(decoded, message.receipt_handle, now)
            self.counters.messages += 1
            self.counters.names_announced += len(decoded)
        self._schedule_write()

    def _schedule_write(self) -> None:
        """Write the pending names when their coalescing window ends (after the write in flight)."""
        if self._write_call is not None or self._writing or not self._pending:
            return
        delay = self._pending.due_in(self.config.index_coalesce_seconds, self._reactor.seconds())
        self._write_call = self._reactor.callLater(delay, self._scheduled_write)

    def _scheduled_write(self) -> None:
        self._write_call = None
        self.write_pending().addErrback(self._write_failed)

    def _write_failed(self, failure: Any) -> None:
        self.counters.errors += 1
        self._errors.error("write", "turok-indexer: writing the pending names failed, their messages are left "
                           "for redelivery: {error!r}", error=failure.value)

    @defer.inlineCallbacks
    def write_pending(self) -> Generator[defer.Deferred, Any, None]:
        """Write every pending name now (once the write in flight ended) and delete their messages;
        fails as the write does, leaving all of them undeleted (SQS redelivers them)."""
        if self._write_call is not None:
            self._write_call.cancel()
            self._write_call = None
        while self._writing:
            ended: defer.Deferred = defer.Deferred()
            self._write_ended.append(ended)
            yield ended
        batch, self._pending = self._pending, PendingNames()
        if not batch:
            return
        self._writing = True
        try:
            yield self._write(batch)
        finally:
            self._writing = False
            ended_list, self._write_ended = self._write_ended, []
            for ended in ended_list:
                ended.callback(None)
            self._schedule_write()

    @defer.inlineCallbacks
    def _write(self, batch: PendingNames) -> Generator[defer.Deferred, Any, None]:
        """One add_names call per index for every name of ``batch``, then its messages deleted."""
        config = self.config
        names = batch.names
        stats = tag_stats = None
        if names:
            stats = yield self._in_pool(self.store.add_names, names)
            self.counters.names_added += stats.added
            self.counters.names_rejected += stats.rejected
            self.counters.shard_writes += stats.shard_writes
            self.counters.conflicts_retried += stats.conflicts
            if stats.rejected:
                self._errors.error("rejected", "turok-indexer: {count} announced names cannot be indexed",
                                   count=stats.rejected)
            series = tagged(names)
            if series:
                tag_stats = yield self._in_pool(self.tag_store.add_names, series)
                self.counters.tagged_added += tag_stats.added
                self.counters.shard_writes += tag_stats.shard_writes
                self.counters.conflicts_retried += tag_stats.conflicts
        # only now is what they carry durable in the index
        yield self._in_pool(self.queue.delete, batch.handles)
        self.counters.index_writes += 1
        if stats is not None:
            yield self._maybe_move("index", self.store, stats, config.index_shard_target_names)
        if tag_stats is not None:
            yield self._maybe_move("tag index", self.tag_store, tag_stats, config.tag_index_shard_target_names)

    def self_metrics_gauges(self) -> dict[str, float]:
        gauges = super().self_metrics_gauges()
        gauges["pending_names"] = len(self._pending)
        return gauges

    def finish_work(self) -> defer.Deferred:
        """Write what is pending once the loops have ended (a failure is logged: SQS redelivers)."""
        return self.write_pending().addErrback(self._write_failed)

    @defer.inlineCallbacks
    def _maybe_move(self, label: str, store: ShardedIndexStore, stats: Optional[AddStats],
                    target_names: int) -> Generator[defer.Deferred, Any, None]:
        """Move ``store`` to more shards when due (one poller at a time); without ``stats`` (the
        first round) also delete the layouts a mover killed after its switch left. A failed move
        is logged and left for the next round or indexer (every step of a move can be taken again)."""
        if label in self._moving:
            return
        self._moving.add(label)
        try:
            to = yield self._in_pool(move_due, store, stats or AddStats(), target_names)
            if to is None and stats is not None:
                return
            if to is not None:
                log.info("turok-indexer: moving the {label} from {old} to {new} shards",
                         label=label, old=store.manifest().shards, new=to)
            moved = yield self._in_pool(move_shards, store, to)
            if moved.moved_from:
                self.counters.moves += 1
                log.info("turok-indexer: {label} moved: {stats}", label=label, stats=moved)
            elif moved.deleted:
                log.info("turok-indexer: deleted {count} objects of the {label}'s retired layouts",
                         count=moved.deleted, label=label)
        except Exception as exc:  # the move stays in progress: any mover finishes it
            self._errors.error("move", "turok-indexer: moving the {label} failed, left for the next round: {error!r}",
                               label=label, error=exc)
        finally:
            self._moving.discard(label)


def make_indexer_service(config: TurokConfig) -> IndexerService:
    """The turok-indexer service (``twistd -n turok-indexer --config FILE``)."""
    return IndexerService(config)
