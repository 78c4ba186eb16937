"""The gateway's outbox: the journal's release protocol, encoding, the body spool, the drain to SQS.

``Outbox`` owns the write-ahead spool (``turok_core.spool``) in ``spool_dir``: the journal of
accepted points (``journal_points``, called before the points join their windows) and the spool
of encoded bodies. ``release`` takes windows the service released: it writes a RELEASE marker,
encodes them in the AWS thread pool (never on the reactor thread), each metrics-queue partition's
windows into bodies of their own (``turok_core.wire.partitions``), appends the bodies with their
partitions to the spool, then writes the DONE marker that lets the journal forget their points.
The spool is drained to SQS oldest first, each body to its partition's queue, one send in
flight, from the pool (``turok_core.spool.drain``); a failed send leaves its bodies in the spool
and backs off (``DRAIN_BACKOFF``), and a body SQS refuses ``POISON_ATTEMPTS`` times while it
takes others is dropped and counted. A spool write that fails (disk full) is counted and logged;
its bodies wait in memory and are sent first.
After every change of the spool's size the outbox tells ``Backpressure``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import boto3
from botocore.config import Config as BotoConfig
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gateway.backpressure import Backpressure
from gateway.counters import GatewayCounters
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import PolicyCache, SchemaSet
from turok_core.runtime.aws import make_client
from turok_core.runtime.ratelimit import Throttle
from turok_core.runtime.retry import Backoff
from turok_core.runtime.threads import start_aws_threadpool
from turok_core.spool.bodies import BodySpool
from turok_core.spool.drain import Encoded, SendResult, encode_bodies, send_round
from turok_core.spool.journal import PointJournal
from turok_core.windows.buffer import Policy
from turok_core.wire.partitions import partition_queue_names
from turok_core.wire.queues import MessageQueue

log = Logger(namespace="turok.gateway")

ERROR_LOG_INTERVAL = 30.0
SEND_BODIES = 100  # bodies per drain round (10 SendMessageBatch calls)
SEND_BYTES = 4 * 1024 * 1024
SEND_ATTEMPTS = 2  # MessageQueue's attempts per batch; the drain's backoff does the rest
DRAIN_BACKOFF = Backoff(base=0.5, cap=8.0)  # seconds before a failed drain is tried again
POISON_ATTEMPTS = 5  # a body SQS refuses this many times while others pass is dropped
COMPACT_EXTRA_SECONDS = 60.0  # journal segments older than the windows' span + this are compacted
POLICY_CACHE = 100_000


def _quick_sqs_client(config: TurokConfig):
    """``make_client``'s SQS client with short timeouts and one retry: the spool keeps what
    fails and the drain backs off, so an unreachable endpoint must fail a round fast (and a
    stopping gateway must not wait minutes for botocore's own retries)."""
    client = make_client("sqs", config)
    quick = client.meta.config.merge(BotoConfig(connect_timeout=2, read_timeout=15,
                                                retries={"mode": "standard", "total_max_attempts": 2}))
    return boto3.session.Session().client("sqs", region_name=client.meta.region_name,
                                          endpoint_url=client.meta.endpoint_url, config=quick)


def _longest_step(policies: Sequence[Optional[Policy]], oldest_age: float = 0.0) -> int:
    """The longest base step among a chunk's policies (``WindowBuffer.policies_of``; 0 when
    none has one), so the journal can drop a segment as soon as its windows closed.

    A chunk whose oldest point (``oldest_age`` seconds old) may be past a base retention has
    windows at coarser steps (backfill): then the longest step of any archive."""
    if not policies:
        return 0
    first = policies[0]
    if first is not None and policies.count(first) == len(policies):  # the usual chunk: one policy
        distinct = [first]
    else:
        # policies are interned (one tuple per distinct policy): their ids dedupe them without
        # hashing the archives in each
        distinct = [policy for policy in {id(p): p for p in policies}.values() if policy is not None]
    if any(policy[2] and oldest_age > policy[2][0].retention for policy in distinct):
        return max(max(policy[0], *(archive.step for archive in policy[2])) for policy in distinct)
    return max((policy[0] for policy in distinct), default=0)


class Outbox:
    """Journal, body spool and drain to SQS (see the module); ``queue`` and ``pool`` are made
    by ``connect`` when not given."""

    def __init__(self, config: TurokConfig, counters: GatewayCounters, pressure: Backpressure, schemas: SchemaSet,
                 reactor, clock: Callable[[], float], queue: Optional[MessageQueue] = None, pool=None,
                 queues: Optional[Sequence[MessageQueue]] = None) -> None:
        self.config = config
        self.counters = counters
        self.pressure = pressure
        self.clock = clock
        self._reactor = reactor
        self._max_step = 0
        self.use_schemas(schemas)
        # one queue per partition (``queue`` alone: the one partition's)
        self._queues: list[MessageQueue] = list(queues) if queues else [queue] if queue is not None else []
        self._pool = pool
        self.journal: Optional[PointJournal] = None
        self.spool: Optional[BodySpool] = None
        self._unspooled: list[str] = []  # bodies the spool could not take (disk full): sent first
        self._unspooled_partitions: list[int] = []  # their partitions
        self.encoding: Optional[defer.Deferred] = None  # the release being encoded and spooled
        self._sending: Optional[defer.Deferred] = None
        self._running = False  # a drained round goes on with the backlog at once
        self._failures = 0
        self._next_send = 0.0
        self._refusals: dict[tuple[int, int], int] = {}
        self._last_sync = self._last_compact = 0.0
        self._error_log = Throttle(clock, ERROR_LOG_INTERVAL)

    # --- sizes --------------------------------------------------------------------------------
    @property
    def spool_bytes(self) -> int:
        """Bytes on disk (journal and bodies) plus bodies held in memory for want of disk."""
        journal = self.journal.total_bytes if self.journal is not None else 0
        bodies = self.spool.total_bytes if self.spool is not None else 0
        return journal + bodies + sum(map(len, self._unspooled))

    @property
    def backlog_bodies(self) -> int:
        """Bodies waiting for SQS (spooled or, for want of disk, in memory)."""
        return (self.spool.pending_count if self.spool is not None else 0) + len(self._unspooled)

    @property
    def backlog_bytes(self) -> int:
        """Bytes of the bodies waiting for SQS."""
        return (self.spool.pending_bytes if self.spool is not None else 0) + sum(map(len, self._unspooled))

    def use_schemas(self, schemas: SchemaSet) -> None:
        """The schema files (again, after an edit): each metric's base step, the largest step."""
        self._max_step = max(self._max_step, *(archives[0].step for _name, archives in schemas.archive_sets()))
        self._steps = PolicyCache(lambda metric: schemas.policy_for(metric).step, POLICY_CACHE)  # base steps

    def check_pressure(self) -> None:
        self.pressure.check(self.spool_bytes, self.backlog_bodies)

    # --- opening ------------------------------------------------------------------------------
    def open(self, put_back: Callable[[list[str], list[float], list[int]], int]) -> None:
        """Open the spool (``spool_dir``) and take back what the last run left in it: the
        journaled points of open windows go to ``put_back`` (returns how many it took)."""
        config = self.config
        directory = Path(config.spool_dir).resolve()
        now = self.clock()
        self.spool = BodySpool(directory / "bodies", config.spool_fsync)
        stats = self.spool.recover()
        self.journal = PointJournal(directory / "points", self._max_step, config.spool_fsync)
        recovered = self.journal.recover(self._deadline, now)
        stats.add(recovered.stats)
        counters = self.counters
        counters.bodies_replayed = self.spool.pending_count
        counters.points_replayed = put_back(recovered.names, recovered.values, recovered.timestamps)
        counters.spool_damaged_records = stats.damaged
        log.info("turok-gateway: spool {directory} (fsync {fsync}, bound {limit} bytes): {bodies} unsent "
                 "bodies ({bytes} bytes) and {points} points of open windows recovered, {delivered} "
                 "journaled points already delivered",
                 directory=str(directory), fsync=config.spool_fsync, limit=config.spool_max_bytes,
                 bodies=counters.bodies_replayed, bytes=self.spool.pending_bytes,
                 points=counters.points_replayed, delivered=recovered.delivered)
        if stats.damaged:
            log.error("turok-gateway: skipped {count} damaged or torn region(s) ({bytes} bytes) of the spool "
                      "in {directory}; records in them are lost", count=stats.damaged,
                      bytes=stats.skipped_bytes, directory=str(directory))
        self._last_sync = self._last_compact = now
        self._running = True
        self.check_pressure()

    def connect(self) -> None:
        """Start the AWS thread pool and the SQS queue unless given; look the queue up now so a
        wrong name or endpoint shows at start-up, not at the first flush."""
        config = self.config
        if self._pool is None:
            self._pool = start_aws_threadpool(self._reactor, config.aws_threads, "turok-gateway-aws")
        if not self._queues:
            client = _quick_sqs_client(config)
            self._queues = [MessageQueue(client, name, config.sqs_max_message_bytes, max_attempts=SEND_ATTEMPTS)
                            for name in partition_queue_names(config)]
        for queue, name in zip(self._queues, partition_queue_names(config)):
            check = self._in_pool(lambda queue=queue: queue.url)
            check.addErrback(lambda failure, name=name: log.error(
                "turok-gateway: SQS queue {queue} is not reachable yet: {error}", queue=name, error=failure.value))

    def _deadline(self, metric: str, timestamp: int) -> Optional[int]:
        """When ``metric``'s window holding ``timestamp`` can close: slot + step (None: no schema)."""
        step = self._steps(metric)  # None: no schema, the windows refuse it
        return timestamp - timestamp % step + step if step else None

    def _in_pool(self, function, *args) -> defer.Deferred:
        return deferToThreadPool(self._reactor, self._pool, function, *args)

    # --- the journal --------------------------------------------------------------------------
    def journal_points(self, names: Sequence[str], values: Sequence[float], timestamps: Sequence[int],
                       policies: Sequence[Optional[Policy]]) -> None:
        """Journal accepted points before they join their windows (a no-op before ``open``)."""
        if self.journal is None:
            return
        try:
            oldest_age = self.clock() - min(timestamps) if timestamps else 0.0
            self.journal.add(names, values, timestamps, _longest_step(policies, oldest_age))
        except OSError as exc:  # keep accepting: the points are in memory, only not durable
            self._spool_failed("journal points", exc)
        self.check_pressure()

    def maintain(self, now: float, buffered_points: int) -> None:
        """Sync the spool on its fsync interval; clear or compact the journal when it may."""
        config = self.config
        try:
            if config.spool_fsync == "interval" and now - self._last_sync >= config.spool_fsync_interval_seconds:
                self._last_sync = now
                self.journal.sync()
                self.spool.sync()
            journal = self.journal
            if not buffered_points and self.encoding is None and not journal.releasing and journal.total_bytes:
                journal.clear()  # nothing open, nothing being released: every point is spooled
            # segments kept by points far ahead or late get rewritten, so they cannot pin the bound
            horizon = self._max_step + config.window_grace_seconds + COMPACT_EXTRA_SECONDS
            if self.encoding is None and now - self._last_compact >= horizon / 2:
                self._last_compact = now
                journal.compact(now, horizon, self._deadline)
        except OSError as exc:
            self._spool_failed("sync or compaction", exc)

    def _spool_failed(self, what: str, exc: BaseException) -> None:
        self.counters.spool_errors += 1
        if self._error_log.ready("spool"):
            log.error("turok-gateway: spool write failed ({what}): {error}; kept in memory only "
                      "({count} spool errors so far)", what=what, error=exc, count=self.counters.spool_errors)

    # --- release and encoding -----------------------------------------------------------------
    def release(self, messages: Sequence[TurokMessage], released_until: float) -> defer.Deferred:
        """Journal a release of ``messages``, encode them in the pool, spool the bodies."""
        if not messages:
            return defer.succeed(None)
        try:
            release = self.journal.begin_release(released_until, self.clock())
        except OSError as exc:
            self._spool_failed("release marker", exc)
            release = None
        config = self.config
        self.encoding = encoding = self._in_pool(encode_bodies, messages, config.sqs_max_message_bytes,
                                                 config.sqs_compression_level, len(self._queues))
        encoding.addCallback(self._encoded, release)
        encoding.addErrback(lambda failure: log.failure("turok-gateway: encoding crashed", failure))

        def idle(_):
            self.encoding = None
        encoding.addBoth(idle)
        return encoding

    def _encoded(self, result: Encoded, release: Optional[int]) -> None:
        counters = self.counters
        counters.messages_encoded += result.messages - result.unencodable
        counters.messages_unencodable += result.unencodable
        if result.unencodable and self._error_log.ready("unencodable"):
            log.error("turok-gateway: {count} message(s) could not be encoded and were dropped",
                      count=result.unencodable)
        if self._unspooled:  # the disk failed before: keep the order, behind the overflow
            self._keep_unspooled(result)
            return
        try:
            if result.partitions is None:  # one partition: the spool's records as before partitions
                self.spool.add(result.bodies)
            else:
                self.spool.add(result.bodies, result.partitions)
        except OSError as exc:
            self._spool_failed("bodies", exc)
            self._keep_unspooled(result)
            return  # the release stays open: its points are replayed at the next start
        counters.bodies_spooled += len(result.bodies)
        if release is not None:
            try:
                self.journal.end_release(release)
            except OSError as exc:
                self._spool_failed("release done marker", exc)
        self.drain()

    def _keep_unspooled(self, result: Encoded) -> None:
        self._unspooled.extend(result.bodies)
        self._unspooled_partitions.extend(result.partitions or [0] * len(result.bodies))

    # --- the drain to SQS ---------------------------------------------------------------------
    def drain(self) -> None:
        """Start a send of the oldest waiting bodies unless one is running or backing off."""
        if self._sending is None and self.backlog_bodies and self.clock() >= self._next_send:
            self._send_head()

    def _send_head(self) -> defer.Deferred:
        """Send the oldest waiting bodies; fires True when all of them went."""
        entries = self.spool.head(SEND_BODIES, SEND_BYTES) if not self._unspooled else []
        memory = list(self._unspooled[:SEND_BODIES])
        self._sending = sending = self._in_pool(send_round, self._queues, self.spool, entries, memory,
                                                self.config.sqs_max_message_bytes,
                                                self._unspooled_partitions[:SEND_BODIES])
        sending.addCallback(self._sent)

        def crashed(failure) -> bool:
            log.failure("turok-gateway: sending crashed", failure)
            return False

        def idle(ok):
            self._sending = None
            if ok and self._running:  # drained a round: go on with the backlog at once
                self._reactor.callLater(0, self.drain)
            return ok
        sending.addErrback(crashed)
        sending.addBoth(idle)
        return sending

    def _sent(self, result: SendResult) -> bool:
        counters = self.counters
        if result.sent_memory:
            del self._unspooled[:result.sent_memory]
            del self._unspooled_partitions[:result.sent_memory]
        try:
            self.spool.ack(result.sent)
            self._drop_poison(result.refused)
            if result.damaged:
                self.spool.ack(result.damaged)
                counters.bodies_dropped += len(result.damaged)
                log.error("turok-gateway: {count} spooled body(ies) unreadable (damaged on disk): dropped",
                          count=len(result.damaged))
        except OSError as exc:
            self._spool_failed("acknowledgement", exc)
        counters.bodies_sent += len(result.sent) + result.sent_memory
        counters.bytes_sent += result.bytes
        self.check_pressure()
        if result.error is None:
            if self._failures:
                log.info("turok-gateway: SQS queue {queue} takes messages again; backlog {count} bodies",
                         queue=self.config.queue_name, count=self.backlog_bodies)
            self._failures = 0
            return True
        counters.send_errors += 1
        self._failures += 1
        delay = DRAIN_BACKOFF.delay(self._failures - 1)
        self._next_send = self.clock() + delay
        if self._failures == 1 or self._error_log.ready("send"):
            log.error("turok-gateway: sending to SQS queue {queue} failed ({error}); {count} bodies "
                      "({bytes} bytes) wait in the spool, next try in {delay:.1f}s",
                      queue=self.config.queue_name, error=result.error, count=self.backlog_bodies,
                      bytes=self.backlog_bytes, delay=delay)
        return False

    def _drop_poison(self, refused: list[tuple[int, int]]) -> None:
        """Count refusals of single bodies; give up on one SQS refused ``POISON_ATTEMPTS`` times."""
        give_up = []
        for key in refused:
            self._refusals[key] = self._refusals.get(key, 0) + 1
            if self._refusals[key] >= POISON_ATTEMPTS:
                give_up.append(key)
                del self._refusals[key]
        if give_up:
            self.spool.ack(give_up)
            self.counters.bodies_dropped += len(give_up)
            log.error("turok-gateway: SQS refused {count} body(ies) {attempts} times while taking others; "
                      "dropped them ({total} so far)", count=len(give_up), attempts=POISON_ATTEMPTS,
                      total=self.counters.bodies_dropped)

    # --- stopping -----------------------------------------------------------------------------
    def stop_draining(self) -> None:
        """No new round after the current one: the service's shutdown sends what it can itself."""
        self._running = False

    @defer.inlineCallbacks
    def send_backlog(self, seconds: float):
        """Send the waiting bodies for at most ``seconds`` (a stopping gateway)."""
        deadline = self.clock() + seconds
        while self.backlog_bodies and self.clock() < deadline:
            if self._sending is not None:
                yield self._sending
                continue
            sent = yield self._send_head()
            if not sent:
                yield task.deferLater(self._reactor, min(1.0, max(0.0, deadline - self.clock())), lambda: None)

    def close(self) -> None:
        """Close the spool; what SQS did not take stays in it for the next start."""
        if self.backlog_bodies:
            log.error("turok-gateway: SQS did not take {count} bodies ({bytes} bytes) before shutdown; "
                      "they stay in the spool {directory} and are sent at the next start",
                      count=self.backlog_bodies, bytes=self.backlog_bytes,
                      directory=str(self.spool.log.directory.parent))
        for part in (self.spool, self.journal):
            if part is not None:
                part.close()
