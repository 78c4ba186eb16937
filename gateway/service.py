"""The gateway service: plaintext listeners → WindowBuffer → Turok messages on SQS.

``GatewayService`` owns the window buffer, the write-ahead spool (``turok_core.spool.segments``) and the
counters. Every accepted chunk of points is journaled before it joins its windows. Every
``config.flush_interval_seconds`` the windows that have closed (slot + step + grace) are
released, encoded in the AWS thread pool (never on the reactor thread) and appended to the body
spool; the spool is drained to SQS oldest first, one send in flight, from the pool. A failed
send leaves its bodies in the spool and backs off (capped, jittered); the backlog is reported in
the logs and the self-metrics. On start-up the spool gives back the bodies never acknowledged by
SQS and the points whose windows were not spooled yet.

Past ``spool_max_bytes`` (journal + bodies) the gateway applies backpressure: its TCP
connections (plaintext, pickle) stop reading and plaintext UDP points are dropped and counted,
until the spool is back under ``LOW_WATER`` of the bound. ``stopService`` releases every window,
open or not, spools them and sends what it can within ``SHUTDOWN_SEND_SECONDS``; what SQS did not
take stays in the spool for the next start. Every ``config.self_metrics_interval_seconds`` its
counters go into its own windows as ``turok.agents.<agent>.gateway.*`` points.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import boto3
from botocore.config import Config as BotoConfig
from twisted.application import internet, service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols import policies

from turok_core.parse import native
from turok_core.runtime.aws import make_client
from turok_core.wire.codec import encode_messages
from turok_core.wire.groups import WindowGroup
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.parse.plaintext import ParsedLines
from turok_core.wire.queues import MessageQueue, QueueSendError, batch_bodies
from turok_core.runtime.ratelimit import Throttle
from turok_core.model.schemas import PolicyCache, load_schemas
from turok_core.runtime.selfmetrics import flatten_counters
from turok_core.runtime.cache_server import cache_site
from turok_core.runtime.selfmetrics_loop import SelfMetricsLoop
from turok_core.runtime.retry import Backoff
from turok_core.runtime.threads import start_aws_threadpool
from turok_core.spool.segments import BodySpool, PointJournal, SpoolError, SpooledBody
from turok_core.windows.buffer import WindowBuffer, window_points

from gateway.pickle_receiver import CarbonPickleFactory
from gateway.plaintext_receivers import PlaintextTCPFactory, PlaintextUDPProtocol
from gateway.connections import configure_receivers
from gateway.statsd_receivers import add_statsd_services
from gateway.udp import UDP_MAX_PACKET_SIZE

log = Logger(namespace="turok.gateway")

BAD_LINE_LOG_INTERVAL = 10.0  # seconds between two reports of malformed input
ERROR_LOG_INTERVAL = 30.0
STATS_LOG_INTERVAL = 60.0
SHUTDOWN_SEND_SECONDS = 10.0  # how long a stopping gateway keeps trying to empty its spool
LOW_WATER = 0.8  # backpressure ends below this fraction of spool_max_bytes
SEND_BODIES = 100  # bodies per drain round (10 SendMessageBatch calls)
SEND_BYTES = 4 * 1024 * 1024
SEND_ATTEMPTS = 2  # MessageQueue's attempts per batch; the drain's backoff does the rest
DRAIN_BACKOFF = Backoff(base=0.5, cap=8.0)  # seconds before a failed drain is tried again
POISON_ATTEMPTS = 5  # a body SQS refuses this many times while others pass is dropped
COMPACT_EXTRA_SECONDS = 60.0  # journal segments older than the windows' span + this are compacted
POLICY_CACHE = 100_000


@dataclass
class GatewayCounters:
    points_received: int = 0  # good points handed to the window buffer
    points_rejected: int = 0  # points of metrics no schema matches
    bad_lines: int = 0
    nan_dropped: int = 0
    points_dropped_overload: int = 0  # UDP points refused while the spool was over its bound
    messages_encoded: int = 0  # windows released and encoded into bodies
    messages_unencodable: int = 0
    bodies_spooled: int = 0
    bodies_sent: int = 0
    bytes_sent: int = 0
    send_errors: int = 0  # drain rounds that failed (their bodies stay in the spool)
    bodies_dropped: int = 0  # bodies SQS kept refusing while it took others (logged)
    spool_errors: int = 0  # spool writes that failed (disk full…): logged, data kept in memory
    backpressure_pauses: int = 0  # times TCP reading was paused for a full spool
    points_replayed: int = 0  # journaled points put back into windows at start-up
    bodies_replayed: int = 0  # spooled bodies found unsent at start-up
    spool_damaged_records: int = 0  # damaged or torn spool regions skipped at start-up
    cache_queries: int = 0  # finder queries for the windows held here
    cache_queries_refused: int = 0  # malformed ones
    # per receiving protocol (plaintext_tcp, plaintext_udp, pickle, statsd, …): the key is
    # accept's ``protocol`` argument; reported as turok.agents.<agent>.gateway.<field>.<protocol>
    points_by_protocol: dict[str, int] = field(default_factory=dict)
    bad_lines_by_protocol: dict[str, int] = field(default_factory=dict)


@dataclass
class _Encoded:
    """What one encode round made, computed in the pool and applied on the reactor."""
    messages: int = 0
    unencodable: int = 0
    bodies: list[str] = field(default_factory=list)


@dataclass
class _SendResult:
    """What one drain round did, computed in the pool and applied on the reactor."""
    sent: list[tuple[int, int]] = field(default_factory=list)  # spool keys SQS took
    sent_memory: int = 0  # bodies of the in-memory overflow SQS took
    bytes: int = 0
    refused: list[tuple[int, int]] = field(default_factory=list)  # refused while others passed
    damaged: list[tuple[int, int]] = field(default_factory=list)  # unreadable from the spool
    error: Optional[BaseException] = None


def _quick_sqs_client(config: TurokConfig):
    """``make_client``'s SQS client with short timeouts and one retry: the spool keeps what
    fails and the drain backs off, so an unreachable endpoint must fail a round fast (and a
    stopping gateway must not wait minutes for botocore's own retries)."""
    client = make_client("sqs", config)
    quick = client.meta.config.merge(BotoConfig(connect_timeout=2, read_timeout=15,
                                                retries={"mode": "standard", "total_max_attempts": 2}))
    return boto3.session.Session().client("sqs", region_name=client.meta.region_name,
                                          endpoint_url=client.meta.endpoint_url, config=quick)


class PausingFactory(policies.WrappingFactory):
    """Wraps a TCP factory so the gateway can stop and restart reading on all its connections."""

    def __init__(self, wrapped, is_paused: Callable[[], bool]) -> None:
        super().__init__(wrapped)
        self._is_paused = is_paused

    def __getattr__(self, name: str):
        # transparent: the receiver's settings and counters read through the wrapper
        if name == "wrappedFactory":
            raise AttributeError(name)
        return getattr(self.wrappedFactory, name)

    def buildProtocol(self, addr):
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)

    def registerProtocol(self, protocol) -> None:
        super().registerProtocol(protocol)
        if self._is_paused():  # a connection opened during backpressure starts paused
            protocol.transport.pauseProducing()

    def set_paused(self, paused: bool) -> None:
        for protocol in list(self.protocols):
            transport = protocol.transport
            if transport is not None and transport.connected:
                transport.pauseProducing() if paused else transport.resumeProducing()


class GatewayService(service.Service):
    """Windows, spool, periodic release and drain to SQS, counters; ``accept`` is the listeners' sink."""

    name = "turok-gateway-flush"

    def __init__(self, config: TurokConfig, reactor=None, clock: Optional[Callable[[], float]] = None,
                 queue: Optional[MessageQueue] = None, pool=None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.clock: Callable[[], float] = clock or reactor.seconds
        self.counters = GatewayCounters()
        self._reactor = reactor
        self._queue = queue
        self._schemas = schemas = load_schemas(config)

        def policy(metric: str) -> tuple[int, str]:
            found = schemas.policy_for(metric)
            return found.step, found.aggregation_type

        self.buffer = WindowBuffer(policy, config.window_grace_seconds)
        self._longest_retention = schemas.longest_retention
        self._max_step = max(archives[0].step for _name, archives in schemas.archive_sets())
        self._steps = PolicyCache(lambda metric: schemas.policy_for(metric).step, POLICY_CACHE)  # base steps
        self.receiver_counters: dict[str, object] = {}  # receiver name → its counters dataclass
        self.pausing_factories: list[PausingFactory] = []
        self.paused = False
        self.journal: Optional[PointJournal] = None
        self.spool: Optional[BodySpool] = None
        self._unspooled: list[str] = []  # bodies the spool could not take (disk full): sent first
        self._pool = pool  # None: startService starts the AWS thread pool
        self._loop: Optional[task.LoopingCall] = None
        self._self_metrics: Optional[SelfMetricsLoop] = None
        self._encoding: Optional[defer.Deferred] = None
        self._sending: Optional[defer.Deferred] = None
        # released windows still answered to cache queries: (released at, groups), oldest first
        self._recent: list[tuple[float, list[WindowGroup]]] = []
        self._failures = 0
        self._next_send = 0.0
        self._refusals: dict[tuple[int, int], int] = {}
        self._last_sync = self._last_compact = 0.0
        self._bad_pending = 0
        self._bad_example: Optional[tuple[bytes, str]] = None
        self._bad_log = Throttle(self.clock, BAD_LINE_LOG_INTERVAL)
        self._error_log = Throttle(self.clock, ERROR_LOG_INTERVAL)
        self._stats_log = Throttle(self.clock, STATS_LOG_INTERVAL)
        self._pressure_log = Throttle(self.clock, BAD_LINE_LOG_INTERVAL)

    # --- input (reactor thread) ---------------------------------------------------------------
    def accept(self, parsed: ParsedLines, source: str = "", protocol: str = "", droppable: bool = False) -> None:
        """Take a parsed chunk: good points journaled and into windows, bad lines counted and reported.

        ``protocol`` keys the per-protocol counters (default: ``source``'s first word).
        ``droppable`` points (UDP) are refused and counted while the spool is over its bound."""
        counters = self.counters
        protocol = protocol or source.partition(" ")[0] or "other"
        now = int(self.clock())
        parsed.drop_out_of_range(now - self._longest_retention, now + self.config.max_future_seconds)
        if parsed.names and droppable and self.paused:
            counters.points_dropped_overload += len(parsed.names)
            if self._error_log.ready("overload"):
                log.error("turok-gateway: spool over its bound ({limit} bytes): dropping UDP points "
                          "({total} so far)", limit=self.config.spool_max_bytes,
                          total=counters.points_dropped_overload)
        elif parsed.names:
            rejected_before = self.buffer.rejected_points
            added = self._add_points(parsed.names, parsed.values, parsed.timestamps)
            counters.points_received += added
            by_protocol = counters.points_by_protocol
            by_protocol[protocol] = by_protocol.get(protocol, 0) + added
            rejected = self.buffer.rejected_points - rejected_before
            if rejected:
                counters.points_rejected += rejected
                if self._error_log.ready("no-schema"):
                    log.error("turok-gateway: {count} point(s) from {source} match no storage schema and "
                              "were dropped ({total} so far); add a catch-all section (pattern = .*)",
                              count=rejected, source=source, total=counters.points_rejected)
        counters.nan_dropped += parsed.nan_dropped
        if parsed.bad:
            counters.bad_lines += parsed.bad
            bad_by_protocol = counters.bad_lines_by_protocol
            bad_by_protocol[protocol] = bad_by_protocol.get(protocol, 0) + parsed.bad
            self._bad_pending += parsed.bad
            if self._bad_example is None and parsed.bad_examples:
                self._bad_example = (parsed.bad_examples[0], source)
            self._report_bad_lines()

    def _add_points(self, names: Sequence[str], values: Sequence[float], timestamps: Sequence[int]) -> int:
        """Journal points, then put them into their windows (also the self-metrics' sink)."""
        policies = self.buffer.policies_of(names)
        if self.journal is not None:
            try:
                self.journal.add(names, values, timestamps, self._longest_step(policies))
            except OSError as exc:  # keep accepting: the points are in memory, only not durable
                self._spool_failed("journal points", exc)
            self._check_pressure()
        return self.buffer.add_points(names, values, timestamps, policies)

    def _report_bad_lines(self, force: bool = False) -> None:
        if not self._bad_pending or not (self._bad_log.ready("bad-lines") or force):
            return
        example, source = self._bad_example or (b"", "")
        log.warn("turok-gateway: {count} malformed input line(s) ignored ({total} in all); "
                 "e.g. from {source}: {example!r}",
                 count=self._bad_pending, total=self.counters.bad_lines, source=source, example=example)
        self._bad_pending = 0
        self._bad_example = None

    def sink(self, protocol: str, droppable: bool = False) -> Callable[[ParsedLines, str], None]:
        """``accept`` for one listener, counting its points under ``protocol``."""
        def accept(parsed: ParsedLines, source: str = "") -> None:
            self.accept(parsed, source, protocol, droppable)
        return accept

    def pausing(self, factory) -> PausingFactory:
        """``factory`` wrapped so backpressure pauses its connections."""
        wrapped = PausingFactory(factory, lambda: self.paused)
        self.pausing_factories.append(wrapped)
        return wrapped

    # --- backpressure -------------------------------------------------------------------------
    @property
    def spool_bytes(self) -> int:
        """Bytes on disk (journal and bodies) plus bodies held in memory for want of disk."""
        journal = self.journal.total_bytes if self.journal is not None else 0
        bodies = self.spool.total_bytes if self.spool is not None else 0
        return journal + bodies + sum(map(len, self._unspooled))

    def _check_pressure(self) -> None:
        limit = self.config.spool_max_bytes
        size = self.spool_bytes
        if not self.paused and size >= limit:
            self.paused = True
            self.counters.backpressure_pauses += 1
            if self._pressure_log.ready("pause"):  # a load at the bound flaps: say it now and then
                log.warn("turok-gateway: spool at {size} bytes, over its bound of {limit}: TCP input paused, "
                         "UDP points dropped until it is under {low} ({backlog} bodies wait for SQS; "
                         "{count} pause(s) so far)", size=size, limit=limit, low=int(limit * LOW_WATER),
                         backlog=self.backlog_bodies, count=self.counters.backpressure_pauses)
        elif self.paused and size < limit * LOW_WATER:
            self.paused = False
            if self._pressure_log.ready("resume"):
                log.info("turok-gateway: spool down to {size} bytes: input resumed", size=size)
        else:
            return
        for factory in self.pausing_factories:
            factory.set_paused(self.paused)

    def _spool_failed(self, what: str, exc: BaseException) -> None:
        self.counters.spool_errors += 1
        if self._error_log.ready("spool"):
            log.error("turok-gateway: spool write failed ({what}): {error}; kept in memory only "
                      "({count} spool errors so far)", what=what, error=exc, count=self.counters.spool_errors)

    # --- self-metrics -------------------------------------------------------------------------
    def self_metrics(self) -> tuple[dict[str, float], dict[str, float]]:
        """(counters, gauges) for turok.agents.<agent>.gateway.*, with each receiver's own
        counters (``receiver_counters``) under its name, e.g. ``pickle.unsafe_frames``."""
        buffer = self.buffer
        counters = flatten_counters(self.counters)
        for receiver, receiver_counters in self.receiver_counters.items():
            counters.update((f"{receiver}.{name}", value)
                            for name, value in flatten_counters(receiver_counters).items())
        return counters, {"open_windows": buffer.open_windows,
                          "buffered_points": buffer.buffered_points,
                          "spool_bytes": self.spool_bytes,
                          "spool_backlog_bodies": self.backlog_bodies,
                          "spool_backlog_bytes": self.backlog_bytes,
                          "backpressure": int(self.paused)}

    @property
    def backlog_bodies(self) -> int:
        """Bodies waiting for SQS (spooled or, for want of disk, in memory)."""
        return (self.spool.pending_count if self.spool is not None else 0) + len(self._unspooled)

    @property
    def backlog_bytes(self) -> int:
        """Bytes of the bodies waiting for SQS."""
        return (self.spool.pending_bytes if self.spool is not None else 0) + sum(map(len, self._unspooled))

    # --- lifecycle ----------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        config = self.config
        try:  # first: no thread may be running when this exits the process
            self._open_spool()
        except (SpoolError, OSError) as exc:  # a gateway that cannot keep what it accepts must not run
            log.critical("turok-gateway: cannot open the spool: {error}", error=exc)
            raise SystemExit(f"turok-gateway: cannot open the spool: {exc}") from None
        if self._pool is None:
            self._pool = start_aws_threadpool(self._reactor, config.aws_threads, "turok-gateway-aws")
        if self._queue is None:
            self._queue = MessageQueue(_quick_sqs_client(config), config.queue_name,
                                       config.sqs_max_message_bytes, max_attempts=SEND_ATTEMPTS)
        log.info("turok-gateway: plaintext on {interface} tcp/{tcp} udp/{udp}, pickle on tcp/{pickle}, "
                 "windows closing {grace}s after their slot, flush every {flush}s to SQS queue {queue}; "
                 "parsers: {parsers}",
                 interface=config.interface, tcp=config.plaintext_port, udp=config.plaintext_udp_port,
                 pickle=config.pickle_port, parsers=native.describe(),
                 grace=config.window_grace_seconds, flush=config.flush_interval_seconds,
                 queue=config.queue_name)
        # look the queue up now so a wrong name or endpoint shows at start-up, not at first flush
        check = self._in_pool(lambda: self._queue.url)
        check.addErrback(lambda failure: log.error("turok-gateway: SQS queue {queue} is not reachable yet: "
                                                   "{error}", queue=config.queue_name, error=failure.value))
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = self._reactor
        done = self._loop.start(config.flush_interval_seconds, now=False)
        done.addErrback(lambda failure: log.failure("turok-gateway: flush loop died", failure))
        # the gateway's own points go into its windows (journaled), flushed like any others
        self._self_metrics = SelfMetricsLoop(config, "gateway", self.self_metrics, self._add_points,
                                             self._reactor, log, self.clock)
        self._self_metrics.start()

    def _open_spool(self) -> None:
        """Open the spool (``spool_dir``) and take back what the last run left in it."""
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
        counters.points_replayed = self.buffer.add_points(recovered.names, recovered.values,
                                                          recovered.timestamps)
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
        self._check_pressure()

    @staticmethod
    def _longest_step(policies: Sequence[Optional[tuple[int, str]]]) -> int:
        """The longest base step among a chunk's policies (``WindowBuffer.policies_of``; 0 when
        none has one), so the journal can drop a segment as soon as its windows closed."""
        if not policies:
            return 0
        first = policies[0]
        if first is not None and policies.count(first) == len(policies):  # the usual chunk: one policy
            return first[0]
        return max((policy[0] for policy in set(policies) if policy is not None), default=0)

    def _deadline(self, metric: str, timestamp: int) -> Optional[int]:
        """When ``metric``'s window holding ``timestamp`` can close: slot + step (None: no schema)."""
        step = self._steps(metric)  # None: no schema, the windows refuse it
        return timestamp - timestamp % step + step if step else None

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._self_metrics is not None:
            self._self_metrics.stop()
        return self._shutdown()

    @defer.inlineCallbacks
    def _shutdown(self):
        if self.journal is None:  # never started (the spool could not be opened)
            return
        if self._encoding is not None:
            yield self._encoding
        messages = self.buffer.release_all()
        if messages:
            log.info("turok-gateway: shutting down, spooling {count} open window(s)", count=len(messages))
            yield self._release(messages, float("inf"))
        deadline = self.clock() + SHUTDOWN_SEND_SECONDS
        while self.backlog_bodies and self.clock() < deadline:
            if self._sending is not None:
                yield self._sending
                continue
            sent = yield self._send_head()
            if not sent:
                yield task.deferLater(self._reactor, min(1.0, max(0.0, deadline - self.clock())), lambda: None)
        self._report_bad_lines(force=True)
        if self.backlog_bodies:
            log.error("turok-gateway: SQS did not take {count} bodies ({bytes} bytes) before shutdown; "
                      "they stay in the spool {directory} and are sent at the next start",
                      count=self.backlog_bodies, bytes=self.backlog_bytes, directory=str(self.spool.log.directory.parent))
        for part in (self.spool, self.journal):
            if part is not None:
                part.close()
        log.info("turok-gateway: stopped; {counters}", counters=asdict(self.counters))

    # --- output -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Release the closed windows into the spool, drain the spool, keep the spool in shape."""
        self._report_bad_lines()
        now = self.clock()
        if self._stats_log.ready("stats"):
            log.info("turok-gateway: {counters}; open windows {windows}, buffered points {points}; "
                     "spool {spool} bytes, backlog {backlog} bodies ({backlog_bytes} bytes)",
                     counters=asdict(self.counters), windows=self.buffer.open_windows,
                     points=self.buffer.buffered_points, spool=self.spool_bytes,
                     backlog=self.backlog_bodies, backlog_bytes=self.backlog_bytes)
        self._maintain(now)
        if self._encoding is None:
            self._release(self.buffer.release(now), now - self.config.window_grace_seconds)
        self._drain()
        self._check_pressure()

    def _maintain(self, now: float) -> None:
        config = self.config
        try:
            if config.spool_fsync == "interval" and now - self._last_sync >= config.spool_fsync_interval_seconds:
                self._last_sync = now
                self.journal.sync()
                self.spool.sync()
            journal = self.journal
            if (not self.buffer.buffered_points and self._encoding is None and not journal.releasing
                    and journal.total_bytes):
                journal.clear()  # nothing open, nothing being released: every point is spooled
            # segments kept by points far ahead or late get rewritten, so they cannot pin the bound
            horizon = self._max_step + config.window_grace_seconds + COMPACT_EXTRA_SECONDS
            if self._encoding is None and now - self._last_compact >= horizon / 2:
                self._last_compact = now
                journal.compact(now, horizon, self._deadline)
        except OSError as exc:
            self._spool_failed("sync or compaction", exc)

    def _release(self, messages: list[TurokMessage], released_until: float) -> defer.Deferred:
        """Journal a release of ``messages``, encode them in the pool, spool the bodies."""
        if not messages:
            return defer.succeed(None)
        groups = getattr(messages, "groups", None)  # a WindowBatch: answer for it a while longer
        if groups is not None:
            self._recent.append((self.clock(), groups))
            self._forget_recent()
        try:
            release = self.journal.begin_release(released_until, self.clock())
        except OSError as exc:
            self._spool_failed("release marker", exc)
            release = None
        self._encoding = encoding = self._in_pool(self._encode, messages)
        encoding.addCallback(self._encoded, release)
        encoding.addErrback(lambda failure: log.failure("turok-gateway: encoding crashed", failure))

        def idle(_):
            self._encoding = None
        encoding.addBoth(idle)
        return encoding

    def _in_pool(self, function, *args) -> defer.Deferred:
        return deferToThreadPool(self._reactor, self._pool, function, *args)

    def cached_points(self, metrics: list, start: float, until: float) -> dict:
        """The finder's cache query: ``metrics``' windows in ``[start, until)``, open or released
        less than ``gateway_recent_seconds`` ago (still on their way to a turokd), aggregated."""
        self._forget_recent()
        found: dict[str, dict[int, dict[int, float]]] = {}
        for _released, groups in self._recent:
            window_points(groups, metrics, start, until, found)
        window_points(self.buffer.open_groups(), metrics, start, until, found)  # newest last: it wins
        return {metric: {step: sorted(map(list, slots.items())) for step, slots in steps.items()}
                for metric, steps in found.items()}

    def _forget_recent(self) -> None:
        """Drop the released windows older than ``gateway_recent_seconds`` (turokd has them)."""
        horizon = self.clock() - self.config.gateway_recent_seconds
        while self._recent and self._recent[0][0] < horizon:
            self._recent.pop(0)

    def _count_cache_query(self, answered: bool) -> None:
        if answered:
            self.counters.cache_queries += 1
        else:
            self.counters.cache_queries_refused += 1

    def _encode(self, messages: list[TurokMessage]) -> _Encoded:
        """Pool thread: encode ``messages``; one message that cannot be encoded sinks no other."""
        result = _Encoded(messages=len(messages))
        limit = self.config.sqs_max_message_bytes
        try:
            result.bodies = encode_messages(messages, limit, self.config.sqs_compression_level)
        except Exception:
            for message in messages:
                try:
                    result.bodies.extend(encode_messages([message], limit))
                except Exception:
                    result.unencodable += 1
        return result

    def _encoded(self, result: _Encoded, release: Optional[int]) -> None:
        counters = self.counters
        counters.messages_encoded += result.messages - result.unencodable
        counters.messages_unencodable += result.unencodable
        if result.unencodable and self._error_log.ready("unencodable"):
            log.error("turok-gateway: {count} message(s) could not be encoded and were dropped",
                      count=result.unencodable)
        if self._unspooled:  # the disk failed before: keep the order, behind the overflow
            self._unspooled.extend(result.bodies)
            return
        try:
            self.spool.add(result.bodies)
        except OSError as exc:
            self._spool_failed("bodies", exc)
            self._unspooled.extend(result.bodies)
            return  # the release stays open: its points are replayed at the next start
        counters.bodies_spooled += len(result.bodies)
        if release is not None:
            try:
                self.journal.end_release(release)
            except OSError as exc:
                self._spool_failed("release done marker", exc)
        self._drain()

    def _drain(self) -> None:
        """Start a send of the oldest waiting bodies unless one is running or backing off."""
        if self._sending is None and self.backlog_bodies and self.clock() >= self._next_send:
            self._send_head()

    def _send_head(self) -> defer.Deferred:
        """Send the oldest waiting bodies; fires True when all of them went."""
        entries = self.spool.head(SEND_BODIES, SEND_BYTES) if not self._unspooled else []
        memory = list(self._unspooled[:SEND_BODIES])
        self._sending = sending = self._in_pool(self._load_and_send, entries, memory)
        sending.addCallback(self._sent)

        def crashed(failure) -> bool:
            log.failure("turok-gateway: sending crashed", failure)
            return False

        def idle(ok):
            self._sending = None
            if ok and self.running:  # drained a round: go on with the backlog at once
                self._reactor.callLater(0, self._drain)
            return ok
        sending.addErrback(crashed)
        sending.addBoth(idle)
        return sending

    def _load_and_send(self, entries: list[SpooledBody], memory: list[str]) -> _SendResult:
        """Pool thread: read spooled bodies back if needed, send them in SQS batches, in order."""
        result = _SendResult()
        if memory:
            try:
                self._queue.send(memory)
            except Exception as exc:
                result.error = exc
            else:
                result.sent_memory = len(memory)
                result.bytes = sum(map(len, memory))
            return result
        keys, bodies = [], []
        for entry in entries:
            try:
                bodies.extend(self.spool.load([entry]))
            except SpoolError:  # damaged on disk since it was written: dropped, never blocking the rest
                result.damaged.append(entry.key)
            else:
                keys.append(entry.key)
        index = 0
        for batch in batch_bodies(bodies, self.config.sqs_max_message_bytes):
            batch_keys = keys[index:index + len(batch)]
            index += len(batch)
            try:
                self._queue.send(batch)
            except QueueSendError as exc:
                result.error = exc
                unsent = set(exc.bodies)
                for key, body in zip(batch_keys, batch):
                    if body not in unsent:
                        result.sent.append(key)
                        result.bytes += len(body)
                    elif len(unsent) < len(batch):  # SQS took others of this batch: this one is refused
                        result.refused.append(key)
                break
            except Exception as exc:
                result.error = exc
                break
            result.sent.extend(batch_keys)
            result.bytes += sum(map(len, batch))
        return result

    def _sent(self, result: _SendResult) -> bool:
        counters = self.counters
        if result.sent_memory:
            del self._unspooled[:result.sent_memory]
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
        self._check_pressure()
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


def tune_gc(config: TurokConfig) -> None:
    """Process-wide, for the twistd gateway: what start-up built is never collected again
    (``gc.freeze``), and the young generation is collected every ``gc_threshold`` allocations."""
    if config.gc_threshold > 0:
        import gc

        gc.freeze()
        _gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(config.gc_threshold, gen1, gen2)


def make_gateway_service(config: TurokConfig, reactor=None,
                         clock: Optional[Callable[[], float]] = None) -> service.IService:
    """The whole gateway: flush service first (stopped last), then the TCP and UDP listeners."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    top = service.MultiService()
    gateway = GatewayService(config, reactor, clock)
    gateway.setName("gateway")
    gateway.setServiceParent(top)
    tcp_factory = PlaintextTCPFactory(gateway.sink("plaintext_tcp"), gateway.clock, config.max_line_length)
    tcp = internet.TCPServer(config.plaintext_port, gateway.pausing(tcp_factory), interface=config.interface,
                             reactor=reactor)
    tcp.setName("plaintext-tcp")
    tcp.setServiceParent(top)
    udp_protocol = PlaintextUDPProtocol(gateway.sink("plaintext_udp", droppable=True), gateway.clock,
                                        config.max_line_length)
    udp = internet.UDPServer(config.plaintext_udp_port, udp_protocol, interface=config.interface,
                             maxPacketSize=UDP_MAX_PACKET_SIZE, reactor=reactor)
    udp.setName("plaintext-udp")
    udp.setServiceParent(top)
    # Carbon pickle on pickle_port; longer paths than a plaintext line could carry are bad points
    pickle_factory = CarbonPickleFactory(gateway.sink("pickle"), gateway.clock, config.max_pickle_frame_bytes,
                                         config.max_line_length)
    pickle_tcp = internet.TCPServer(config.pickle_port, gateway.pausing(pickle_factory),
                                    interface=config.interface, reactor=reactor)
    pickle_tcp.setName("pickle-tcp")
    pickle_tcp.setServiceParent(top)
    gateway.receiver_counters["pickle"] = pickle_factory.counters
    # StatsD on statsd_port (UDP and TCP): its flusher hands each flush to the windows; its
    # memory is one entry per key, so it is not paused (its flushes are journaled like any point)
    statsd = add_statsd_services(top, config, gateway.sink("statsd"), reactor, gateway.clock)
    gateway.receiver_counters["statsd"] = statsd.aggregator.totals
    # connection limits, idle timeouts and the metric-name rule, on every listener alike
    configure_receivers(top, config, gateway.receiver_counters)
    # the finder's queries for the windows the gateway holds (listed in its cache_hosts)
    cache = internet.TCPServer(config.gateway_cache_port, cache_site(gateway.cached_points, gateway._count_cache_query),
                               interface=config.cache_interface, reactor=reactor)
    cache.setName("cache-query")
    cache.setServiceParent(top)
    return top
