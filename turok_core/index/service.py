"""turok-indexer: announced metric names from the index queue into the sharded S3 index.

``config.indexer_pollers`` loops each long-poll the index queue, decode the announcements of
a batch, add all their names with one ``IndexStore.add_names`` call, the tagged ones also to the
tag index (``turok_core.index.tag_cache``), and delete the messages only once both indexes hold
them. Then, when the shards an index's update wrote hold more than ``index_shard_target_names``
(``tag_index_shard_target_names``) names on average, or a move of that index is in progress (one
a mover left half done: also checked on the first round after start, which deletes the layouts
a mover killed after its switch left), the poller moves it to more shards
(``turok_core.index.reshard``) before its next round. A body that is no announcement
is logged and left alone: SQS redelivers it until its redrive policy moves it to the dead-letter
queue. Every boto3 call runs in the service's AWS thread pool.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer
from twisted.logger import Logger

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
    errors: int = 0  # failed receive/index/delete rounds


class IndexerService(QueueConsumerService):
    """The indexer's poll loops; ``stopService`` waits until each has finished its batch."""

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
        """One receive → index → delete round."""
        config = self.config
        if not self._moves_checked:  # at start, before the first long poll
            self._moves_checked = True
            for label, store in (("index", self._store), ("tag index", self._tag_store)):
                if store is not None:
                    yield self._maybe_move(label, store, None, 0)
        messages = yield self._in_pool(self.queue.receive, SQS_BATCH_ENTRIES, config.receive_wait_seconds,
                                       config.visibility_timeout_seconds)
        if not messages:
            return
        self.note_received(messages)
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
        if handles:  # only now is what they carry durable in the index
            yield self._in_pool(self.queue.delete, handles)
        if stats is not None:
            yield self._maybe_move("index", self.store, stats, config.index_shard_target_names)
        if tag_stats is not None:
            yield self._maybe_move("tag index", self.tag_store, tag_stats, config.tag_index_shard_target_names)

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
