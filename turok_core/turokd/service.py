"""turokd: Turok messages from SQS, held as blocks, written once to DynamoDB; new names announced.

turokd consumes only the metrics-queue partitions whose lease it holds (``lease_holder.py``,
decisions in ``leases.py``, the table in ``turok_core/storage/leases.py``). Every
``lease_heartbeat_seconds`` (in a thread of its own, so slow writes cannot starve it) it renews
its leases, takes free or expired ones up to its fair share and gives back the excess. Each held
partition has its own ``BlockWriter`` and ``config.turokd_pollers`` loops, one batch at a time:
long-poll the partition's queue, put the batch's slots into its open blocks
(``BlockWriter.hold``), extend the visibility of messages that must wait longer than the queue's
timeout for their blocks, and announce metric names this process has not announced yet on the
index queue. Every ``block_tick_seconds`` a tick writes each partition's closed blocks, each in
one merge, recomputes the coarse blocks closing with them, and only then deletes the messages
whose data is all stored; a partition is written only while its lease is valid for
``lease_write_margin_seconds`` more. A partition whose lease is lost (or cannot be proved) is
dropped unwritten: its open blocks are forgotten and its held messages made visible again, so
SQS redelivers them to the new owner. A partition given back, and every partition at a stop, is
written first, its messages deleted, then its lease released. Undecodable bodies are logged and
left alone, so SQS's redrive policy moves them to the dead-letter queue. The finder reads the
held slots over the cache query port (``cache_query.py``). Every boto3 call runs in a thread pool.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable, Optional

from twisted.internet import defer, task
from twisted.logger import Logger

from turok_core.model.config import TurokConfig
from turok_core.model.schemas import SchemaSet, load_schemas
from turok_core.runtime.aws import make_client
from turok_core.runtime.cache_server import cache_site
from turok_core.runtime.consumer import QueueConsumerService, RateLimitedLog, started
from turok_core.storage.leases import LeaseStore, LeaseTable
from turok_core.storage.memory_leases import MemoryLeaseTable
from turok_core.storage.schema_history import MemorySchemaRecord, SchemaRecord
from turok_core.storage.tables import BlockStore
from turok_core.turokd.announcer import Announcer
from turok_core.turokd.block_writer import BlockWriter, CloseResult
from turok_core.turokd.counters import TurokdCounters
from turok_core.turokd.decode import DecodedBatch
from turok_core.turokd.held_receipts import HeldReceipts, show_again
from turok_core.turokd.lease_holder import LeaseChanges, PartitionLeases
from turok_core.turokd.schema_files import TurokdSchemas
from turok_core.turokd.start_snapshots import StartSnapshots
from turok_core.wire.announcements import encode_announcements
from turok_core.wire.partitions import partition_queue_name, partition_queue_names
from turok_core.wire.queues import SQS_BATCH_ENTRIES, MessageQueue, Queue

log = Logger(namespace="turok.turokd")

REJECT_LOG_INTERVAL = 10.0


@dataclass(eq=False)
class PartitionWork:
    """A held partition: its queue, open blocks, poll loops and held messages."""
    partition: int
    queue: Queue
    writer: BlockWriter
    held: HeldReceipts
    loops: list[defer.Deferred] = field(default_factory=list)
    ticking: Optional[defer.Deferred] = None
    extending: bool = False
    releasing: bool = False


class TurokdService(QueueConsumerService):
    """turokd's leases, poll loops and block tick; ``stopService`` writes what it holds, then returns."""

    name = "turokd"
    counters: TurokdCounters

    def __init__(self, config: TurokConfig, reactor: Any = None, store: Optional[BlockStore] = None,
                 queue: Optional[Queue] = None, index_queue: Optional[Queue] = None,
                 schemas: Optional[SchemaSet] = None, clock: Optional[Callable[[], float]] = None,
                 queues: Optional[dict[int, Queue]] = None, leases: Optional[LeaseStore] = None,
                 lease_clock: Callable[[], float] = time.time, schema_record: Optional[SchemaRecord] = None) -> None:
        """``queue`` (one partition) or ``queues`` (partition → queue) and ``leases`` are made at
        start when not given; injected queues without a lease table get an in-memory one, an
        injected store without a schema record an in-memory one. ``lease_clock`` is the wall
        clock lease expiries are written and checked in (and schema changes recorded in)."""
        super().__init__(config, log, reactor)
        self.counters = TurokdCounters()
        self.announcer = Announcer()
        self.clock = clock if clock is not None else self._reactor.seconds
        self._store = store
        self._queues: dict[int, Queue] = dict(queues or ({0: queue} if queue is not None else {}))
        self._index_queue = index_queue
        if leases is None and self._queues:
            leases = MemoryLeaseTable()
        self._lease_table = leases
        self._lease_clock = lease_clock
        if schema_record is None and store is not None:
            schema_record = MemorySchemaRecord()
        self.leases: Optional[PartitionLeases] = None  # made by connect
        # read at construction, so twistd refuses to start on invalid schema files
        self.schema_files = TurokdSchemas(config, schemas if schemas is not None else load_schemas(config),
                                          schema_record, lease_clock, self._reactor.seconds)
        self._rejections = RateLimitedLog(log, self._reactor.seconds, REJECT_LOG_INTERVAL)
        self.work: dict[int, PartitionWork] = {}  # the partitions held, by number
        self._tick_call: Optional[task.LoopingCall] = None
        self._lease_call: Optional[task.LoopingCall] = None
        self._lease_pool: Any = None
        self._heartbeat: Optional[defer.Deferred] = None
        # an IListeningPort once listening (typed Any: zope interfaces need mypy-zope)
        self._cache_port: Any = None

    @property
    def pollers(self) -> int:
        return self.config.turokd_pollers

    @property
    def pool_size(self) -> int:
        # every poller of every partition this turokd may hold long-polls in a thread of its own
        return self.config.aws_threads + self.config.turokd_pollers * max(1, self.config.queue_partitions)

    @property
    def writer(self) -> BlockWriter:
        """The open blocks and their writing of the lowest partition held (a one-partition run's)."""
        if not self.work:
            raise RuntimeError("turokd holds no partition")
        return self.work[min(self.work)].writer

    @property
    def index_queue(self) -> Queue:
        """Where new names are announced: injected, or made at start."""
        return started(self._index_queue)

    def connect(self) -> None:
        config = self.config
        if self._store is None:
            self._store = BlockStore(make_client("dynamodb", config), config)
        if not self._queues or self._index_queue is None:
            sqs = make_client("sqs", config)
            if not self._queues:
                self._queues = {p: MessageQueue.from_config(sqs, config, name)
                                for p, name in enumerate(partition_queue_names(config))}
            self._index_queue = self._index_queue or MessageQueue.from_config(sqs, config, config.index_queue_name)
        if self._lease_table is None:
            self._lease_table = LeaseTable(make_client("dynamodb", config), config.lease_table_name)
        self.leases = PartitionLeases(self._lease_table, len(self._queues), config.lease_duration_seconds,
                                      config.lease_write_margin_seconds, clock=self._lease_clock)
        self._lease_pool = self._start_pool(1, "leases")
        log.info("turokd: {pollers} poller(s) on queue(s) {queue} per partition held ({partitions} partition(s), "
                 "leases in {leases} as {worker}), tables {prefix}{joiner}…, {slots}-slot blocks written "
                 "{delay}s after they end, announcing to {index_queue}",
                 pollers=config.turokd_pollers, queue=", ".join(partition_queue_names(config)),
                 partitions=len(self._queues), leases=config.lease_table_name, worker=self.leases.worker,
                 prefix=config.table_prefix, joiner=config.table_joiner, slots=config.block_slots,
                 delay=config.block_close_delay_seconds, index_queue=config.index_queue_name)

    def start_polling(self) -> None:
        """Record the schema files and read their history, then take leases now and on every
        heartbeat; each partition gained gets its pollers."""
        recorded = self._in_pool(self._record_schemas)
        recorded.addErrback(lambda failure: log.error(
            "turokd: schema history not recorded or read ({error}); data at resolutions of edited "
            "schema files rolls up by the current files only", error=failure.getErrorMessage()))
        recorded.addCallback(lambda _: self._start_leases())

    def _record_schemas(self) -> None:
        """Record the schema files in force and read the history (blocking: in the pool)."""
        if self.schema_files.record():
            log.info("turokd: recorded new schema files in {table}", table=self.config.schema_history_table_name)

    def _start_leases(self) -> None:
        if not self.running:
            return
        self._lease_call = task.LoopingCall(self._renew_leases)
        self._lease_call.clock = self._reactor
        self._lease_call.start(self.config.lease_heartbeat_seconds, now=True)

    def startService(self) -> None:
        super().startService()
        site = cache_site(self._points, self.counters.count_cache_query)
        port = self._reactor.listenTCP(self.config.cache_port, site, interface=self.config.cache_interface)
        self._cache_port = port
        log.info("turokd: cache queries on {interface}:{port}", interface=self.config.cache_interface,
                 port=port.getHost().port)
        self._tick_call = task.LoopingCall(self._tick)
        self._tick_call.clock = self._reactor
        self._tick_call.start(self.config.block_tick_seconds, now=False)

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred, Any, None]:
        """Stop polling, let running ticks finish, then write every open block, delete, release.

        The leases are renewed until then: stopping the pollers waits for their long polls (up to
        ``receive_wait_seconds``), which can outlast a lease, and a partition not provably held
        is dropped unwritten (its coarse blocks still pending lost with it)."""
        if self._tick_call is not None and self._tick_call.running:
            self._tick_call.stop()
        yield super().stopService()
        for work in list(self.work.values()):
            if work.ticking is not None:
                yield work.ticking
        blocks = 0
        for work in list(self.work.values()):
            blocks += (yield self._write_and_release(work, "shutdown"))
        if self._lease_call is not None and self._lease_call.running:
            self._lease_call.stop()
        if self._heartbeat is not None:
            yield self._heartbeat
        if self.leases is not None:
            try:
                yield self._in_given_pool(self._lease_pool, self.leases.retire)
            except Exception as exc:
                log.error("turokd: giving the leases back failed ({error!r}); they expire by themselves",
                          error=exc)
        log.info("turokd: wrote {blocks} open block(s) at shutdown", blocks=blocks)
        if self._cache_port is not None:
            yield self._cache_port.stopListening()
        self._log_stats()  # the counters again, with the shutdown's writes

    # --- leases ---------------------------------------------------------------------------------
    def _renew_leases(self) -> Optional[defer.Deferred]:
        self._check_schemas()
        if self._heartbeat is not None or self.leases is None:  # the last heartbeat is still running
            return None
        heartbeat = self._in_given_pool(self._lease_pool, self.leases.heartbeat)
        heartbeat.addCallback(self._leases_changed)
        heartbeat.addErrback(self._heartbeat_failed)
        self._heartbeat = heartbeat

        def done(_: object) -> None:
            self._heartbeat = None
        heartbeat.addBoth(done)
        return None

    def _check_schemas(self) -> None:
        """Schema files edited while running (``schema_watch.py``): slots held from now on follow
        them, and they are recorded in the schema history as a start records them."""
        reload = self.schema_files.poll()
        if reload is None:
            return
        (log.info if reload.schemas else log.error)("{line}", line=reload.describe("turokd", self.schema_files.paths))
        if reload.schemas is None:
            return
        self._use_schemas()
        recorded = self._in_pool(self._record_schemas)
        recorded.addCallbacks(lambda _: self._use_schemas(), lambda failure: log.error(
            "turokd: edited schema files not recorded ({error})", error=failure.getErrorMessage()))

    def _use_schemas(self) -> None:
        for work in self.work.values():
            work.writer.use_schemas(self.schema_files.current, self.schema_files.history)

    def _leases_changed(self, changes: LeaseChanges) -> None:
        for partition in changes.lost:
            self._drop(partition, "lost")
        for partition in changes.gained:
            if not self.running:  # a stop began while the heartbeat ran: give it back at once
                self._in_given_pool(self._lease_pool, started(self.leases).release, partition)
                continue
            self._start_partition(partition)
        for partition in changes.release:
            work = self.work.get(partition)
            if work is not None and not work.releasing and self.running:
                work.releasing = True
                log.info("turokd: giving partition {partition} back (fair share {share})",
                         partition=partition, share=changes.share)
                self._release(work)

    def _start_partition(self, partition: int) -> None:
        leases, store = started(self.leases), started(self._store)
        writer = BlockWriter(store, self.config, self.schema_files.current, self.clock,
                             owned_since=lambda metric: leases.owned_since(metric),
                             route_old=True, history=self.schema_files.history, shared_before=leases.shared_before,
                             unwritten=StartSnapshots(store, leases.records_since))
        held = HeldReceipts(self.config.visibility_timeout_seconds, self.config.block_tick_seconds)
        work = self.work[partition] = PartitionWork(partition, self._queues[partition], writer, held)
        self.counters.leases_taken += 1
        log.info("turokd: took the lease of partition {partition} (queue {queue}){how}", partition=partition,
                 queue=partition_queue_name(self.config, partition),
                 how=", from a turokd that never gave it back" if leases.took_over(partition) else "")
        for number in range(max(1, self.pollers)):
            loop = self._poll_loop(number, lambda: self.poll_partition(work),
                                   lambda: self.work.get(partition) is work and not work.releasing)
            work.loops.append(loop)
            self._loops.append(loop)

    def _drop(self, partition: int, why: str) -> None:
        """Forget a partition not provably held: nothing written, its messages visible again."""
        work = self.work.pop(partition, None)
        started(self.leases).drop(partition)
        if work is None:
            return
        self.counters.leases_lost += 1
        held = work.held.receipts()
        log.warn("turokd: lease of partition {partition} {why}: dropped {blocks} open block(s) and {messages} "
                 "held message(s) unwritten; SQS redelivers them to the partition's owner", partition=partition,
                 why=why, blocks=work.writer.open.open_blocks, messages=len(held))
        self._show_again(work, held)

    def _show_again(self, work: PartitionWork, receipts: list[str]) -> None:
        """Make messages of a partition no longer held visible to its owner at once."""
        if receipts:
            self._in_pool(show_again, work.queue, receipts).addErrback(lambda failure: None)

    @defer.inlineCallbacks
    def _release(self, work: PartitionWork) -> Generator[defer.Deferred, Any, None]:
        """Give a partition back: its pollers stop, its blocks are written, then the lease goes."""
        yield defer.DeferredList(work.loops, consumeErrors=True)
        if work.ticking is not None:
            yield work.ticking
        if self.work.get(work.partition) is work:
            yield self._write_and_release(work, "hand-over")

    @defer.inlineCallbacks
    def _write_and_release(self, work: PartitionWork, why: str) -> Generator[defer.Deferred, Any, int]:
        """Write all of a partition's blocks while its lease allows, delete, then release it."""
        leases = started(self.leases)
        if not leases.may_write(work.partition):
            self._drop(work.partition, f"not provably held at {why}")
            return 0
        try:
            result = yield self._in_pool(work.writer.close_all)
            yield self._after_close(work, result)
        except Exception as exc:
            self.counters.errors += 1
            log.error("turokd: writing partition {partition}'s open blocks at {why} failed ({error!r}); their "
                      "messages were not deleted, so SQS redelivers them", partition=work.partition, why=why,
                      error=exc)
            self._drop(work.partition, f"unwritten at {why}")
            return 0
        self.work.pop(work.partition, None)
        try:
            yield self._in_given_pool(self._lease_pool, leases.release, work.partition)
            self.counters.leases_released += 1
        except Exception as exc:
            log.error("turokd: releasing partition {partition} failed ({error!r}); it expires by itself",
                      partition=work.partition, error=exc)
        return int(result.blocks)

    def _heartbeat_failed(self, failure: Any) -> None:
        self.counters.errors += 1
        self._errors.error("leases", "turokd: lease heartbeat failed: {error!r}", error=failure.value)

    # --- polling --------------------------------------------------------------------------------
    def poll_once(self) -> defer.Deferred:
        """One round on the lowest partition held (``poll_partition``)."""
        if not self.work:
            return task.deferLater(self._reactor, self.config.block_tick_seconds, lambda: None)
        return self.poll_partition(self.work[min(self.work)])

    @defer.inlineCallbacks
    def poll_partition(self, work: PartitionWork) -> Generator[defer.Deferred, Any, None]:
        """One receive → hold → announce round on a partition (deleting waits for the blocks' tick)."""
        config = self.config
        if work.writer.open.held_messages >= config.max_held_messages:
            # blocks cannot be written (DynamoDB down?): hold no more until ticks catch up
            self.counters.receive_pauses += 1
            yield task.deferLater(self._reactor, config.block_tick_seconds, lambda: None)
            return
        received = yield self._in_pool(work.queue.receive, SQS_BATCH_ENTRIES, config.receive_wait_seconds,
                                       config.visibility_timeout_seconds)
        if not received:
            return
        if self.work.get(work.partition) is not work:  # dropped while receiving: not ours to hold
            self._show_again(work, [message.receipt_handle for message in received])
            return
        self.counters.messages_received += len(received)
        self.note_received(received)
        batch: DecodedBatch = yield self._in_pool(work.writer.hold, received)
        if self.work.get(work.partition) is not work:
            self._show_again(work, [message.receipt_handle for message in received])
            return
        self.counters.count_batch(batch)
        for rejected in batch.rejected:
            self._rejections.error(
                "rejected", "turokd: rejected message {id} (receive {count}): {reason}; "
                "left for the dead-letter queue", id=rejected.message_id, count=rejected.receive_count,
                reason=rejected.reason)
        if batch.duplicates:  # a twin in the same batch carries the data
            yield self._in_pool(work.queue.delete, batch.duplicates)
        yield self._change_visibility(work, work.held.track(batch.held, self.clock()))
        if batch.windows:
            yield self._announce(batch.metrics)

    def _change_visibility(self, work: PartitionWork, longer: list[tuple[str, int]]) -> defer.Deferred:
        if not longer:
            return defer.succeed(None)
        self.counters.visibility_extensions += len(longer)
        return self._in_pool(work.queue.change_visibility, longer)

    # --- the tick -------------------------------------------------------------------------------
    def _tick(self) -> None:
        """Per partition held: write what has closed (a tick still writing is not doubled), and
        keep held messages invisible, also while a slow or failing write is in progress."""
        if self.leases is None:  # not started
            return
        for work in list(self.work.values()):
            if not self.leases.may_write(work.partition):
                self._drop(work.partition, "not provably held (heartbeats failing or late)")
                continue
            if not work.extending:
                work.extending = True
                extended = self._change_visibility(work, work.held.expiring(self.clock()))
                extended.addErrback(lambda failure: self._errors.error(
                    "visibility", "turokd: extending held messages' visibility failed: {error!r}",
                    error=failure.value))
                extended.addBoth(self._extended, work)
            if work.ticking is not None or work.releasing:
                continue
            ticking = self._close_due(work)
            if not ticking.called:
                work.ticking = ticking
                ticking.addBoth(self._tick_done, work)

    @staticmethod
    def _extended(result: object, work: PartitionWork) -> object:
        work.extending = False
        return result

    @staticmethod
    def _tick_done(result: object, work: PartitionWork) -> object:
        work.ticking = None
        return result

    @defer.inlineCallbacks
    def _close_due(self, work: PartitionWork) -> Generator[defer.Deferred, Any, None]:
        try:
            result: CloseResult = yield self._in_pool(work.writer.close)
            yield self._after_close(work, result)
        except Exception as exc:  # blocks stay open and messages held: the next tick retries
            self.counters.errors += 1
            self._errors.error("tick", "turokd: writing closed blocks failed: {error!r}; retrying", error=exc)

    @defer.inlineCallbacks
    def _after_close(self, work: PartitionWork, result: CloseResult) -> Generator[defer.Deferred, Any, None]:
        self.counters.count_close(result)
        if result.deletable:  # only now is what they carry durable in DynamoDB
            yield self._in_pool(work.queue.delete, result.deletable)
            self.counters.messages_deleted += len(result.deletable)
            work.held.done(result.deletable)

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

    def _points(self, metrics: list, start: float, end: float) -> dict:
        """The slots every held partition holds for ``metrics`` (cache queries)."""
        found: dict = {}
        for work in list(self.work.values()):
            for metric, steps in work.writer.open.points(metrics, start, end).items():
                found.setdefault(metric, {}).update(steps)
        return found

    def self_metrics_gauges(self) -> dict[str, float]:
        gauges = super().self_metrics_gauges()
        works = list(self.work.values())
        gauges["open_blocks"] = sum(work.writer.open.open_blocks for work in works)
        gauges["held_messages"] = sum(work.writer.open.held_messages for work in works)
        gauges["partitions_held"] = len(works)
        return gauges

def make_turokd_service(config: TurokConfig) -> TurokdService:
    """The turokd service (``twistd -n turokd --config FILE``)."""
    return TurokdService(config)
