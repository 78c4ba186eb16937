"""The gateway service: plaintext listeners → WindowBuffer → Turok messages on SQS.

``GatewayService`` owns the window buffer and the counters, and keeps start/stop, ``accept`` and
the self-metrics; the rest is its collaborators': the ``Outbox`` (``gateway.outbox``: write-ahead
spool, release, encoding, the drain to SQS), ``Backpressure`` (``gateway.backpressure``: past
``spool_max_bytes`` TCP stops reading and UDP points are dropped) and ``RecentWindows``
(``turok_core.windows.recent``: the finder's cache-query answers). Every accepted chunk is
journaled before it joins its windows; every ``config.flush_interval_seconds`` the windows that
have closed (slot + step + grace) go to the outbox. ``stopService`` releases every window, open
or not, and sends what it can within ``SHUTDOWN_SEND_SECONDS``; what SQS did not take stays in the
spool for the next start. Every ``config.self_metrics_interval_seconds`` the counters go into the
gateway's own windows as ``turok.agents.<agent>.gateway.*`` points.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Callable, Optional, Sequence

from twisted.application import internet, service
from twisted.internet import defer, task
from twisted.logger import Logger

from gateway.backpressure import Backpressure
from gateway.connections import configure_receivers
from gateway.counters import GatewayCounters
from gateway.outbox import Outbox
from gateway.pickle_receiver import CarbonPickleFactory
from gateway.plaintext_receivers import PlaintextTCPFactory, PlaintextUDPProtocol
from gateway.statsd_receivers import add_statsd_services
from gateway.udp import UDP_MAX_PACKET_SIZE
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schema_watch import SchemaWatch
from turok_core.model.schemas import load_schemas
from turok_core.parse import native
from turok_core.parse.batch import ParsedLines
from turok_core.runtime.cache_server import cache_site
from turok_core.runtime.ratelimit import Throttle
from turok_core.runtime.selfmetrics import flatten_counters
from turok_core.runtime.selfmetrics_loop import SelfMetricsLoop
from turok_core.spool.segments import SpoolError
from turok_core.windows.buffer import Policy, WindowBuffer
from turok_core.windows.recent import RecentWindows
from turok_core.wire.partitions import partition_queue_names
from turok_core.wire.queues import MessageQueue

log = Logger(namespace="turok.gateway")

BAD_LINE_LOG_INTERVAL = 10.0  # seconds between two reports of malformed input
ERROR_LOG_INTERVAL = 30.0
STATS_LOG_INTERVAL = 60.0
SHUTDOWN_SEND_SECONDS = 10.0  # how long a stopping gateway keeps trying to empty its spool


class GatewayService(service.Service):
    """Windows, periodic release to the outbox, counters; ``accept`` is the listeners' sink."""

    name = "turok-gateway-flush"

    def __init__(self, config: TurokConfig, reactor=None, clock: Optional[Callable[[], float]] = None,
                 queue: Optional[MessageQueue] = None, pool=None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.clock: Callable[[], float] = clock or reactor.seconds
        self.counters = counters = GatewayCounters()
        self._reactor = reactor
        self.schemas = schemas = load_schemas(config)
        self._schema_watch = SchemaWatch(config, schemas, self.clock)

        def policy(metric: str) -> Policy:
            found = self.schemas.policy_for(metric)
            return found.step, found.aggregation_type, found.archives
        self._policy = policy

        # with the clock, a point older than its first archive's retention goes to the archive
        # whisper would write it to (backfill)
        self.buffer = WindowBuffer(policy, config.window_grace_seconds, clock=self.clock)
        self._longest_retention = schemas.longest_retention
        self.receiver_counters: dict[str, object] = {}  # receiver name → its counters dataclass
        self.backpressure = Backpressure(config.spool_max_bytes, counters, self.clock)
        # pool None: the outbox starts the AWS thread pool; queue None: it makes the SQS queue
        self.outbox = Outbox(config, counters, self.backpressure, schemas, reactor, self.clock, queue, pool)
        self.recent = RecentWindows(config.gateway_recent_seconds, self.clock, self.buffer.open_groups)
        self._loop: Optional[task.LoopingCall] = None
        self._self_metrics: Optional[SelfMetricsLoop] = None
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
        if parsed.names and droppable and self.backpressure.paused:
            counters.points_dropped_overload += len(parsed.names)
            if self._error_log.ready("overload"):
                log.error("turok-gateway: spool over its bound ({limit} bytes): dropping UDP points "
                          "({total} so far)", limit=self.config.spool_max_bytes,
                          total=counters.points_dropped_overload)
        elif parsed.names:
            rejected_before = self.buffer.rejected_points
            expired_before = self.buffer.expired_points
            added = self._add_points(parsed.names, parsed.values, parsed.timestamps)
            counters.points_received += added
            counters.points_expired += self.buffer.expired_points - expired_before
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
        self.outbox.journal_points(names, values, timestamps, policies)
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

    # --- self-metrics -------------------------------------------------------------------------
    def self_metrics(self) -> tuple[dict[str, float], dict[str, float]]:
        """(counters, gauges) for turok.agents.<agent>.gateway.*, with each receiver's own
        counters (``receiver_counters``) under its name, e.g. ``pickle.unsafe_frames``."""
        buffer, outbox = self.buffer, self.outbox
        counters = flatten_counters(self.counters)
        for receiver, receiver_counters in self.receiver_counters.items():
            counters.update((f"{receiver}.{name}", value)
                            for name, value in flatten_counters(receiver_counters).items())
        return counters, {"open_windows": buffer.open_windows,
                          "buffered_points": buffer.buffered_points,
                          "spool_bytes": outbox.spool_bytes,
                          "spool_backlog_bodies": outbox.backlog_bodies,
                          "spool_backlog_bytes": outbox.backlog_bytes,
                          "backpressure": int(self.backpressure.paused)}

    def _count_cache_query(self, answered: bool) -> None:
        """The cache-query server's count of the queries it answered or refused (malformed)."""
        if answered:
            self.counters.cache_queries += 1
        else:
            self.counters.cache_queries_refused += 1

    # --- lifecycle ----------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        config = self.config
        try:  # first: no thread may be running when this exits the process
            self.outbox.open(self.buffer.add_points)
        except (SpoolError, OSError) as exc:  # a gateway that cannot keep what it accepts must not run
            log.critical("turok-gateway: cannot open the spool: {error}", error=exc)
            raise SystemExit(f"turok-gateway: cannot open the spool: {exc}") from None
        log.info("turok-gateway: plaintext on {interface} tcp/{tcp} udp/{udp}, pickle on tcp/{pickle}, "
                 "windows closing {grace}s after their slot, flush every {flush}s to SQS queue {queue}; "
                 "parsers: {parsers}",
                 interface=config.interface, tcp=config.plaintext_port, udp=config.plaintext_udp_port,
                 pickle=config.pickle_port, parsers=native.describe(),
                 grace=config.window_grace_seconds, flush=config.flush_interval_seconds,
                 queue=", ".join(partition_queue_names(config)))
        self.outbox.connect()
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = self._reactor
        done = self._loop.start(config.flush_interval_seconds, now=False)
        done.addErrback(lambda failure: log.failure("turok-gateway: flush loop died", failure))
        # the gateway's own points go into its windows (journaled), flushed like any others
        self._self_metrics = SelfMetricsLoop(config, "gateway", self.self_metrics, self._add_points,
                                             self._reactor, log, self.clock)
        self._self_metrics.start()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._self_metrics is not None:
            self._self_metrics.stop()
        self.outbox.stop_draining()
        return self._shutdown()

    @defer.inlineCallbacks
    def _shutdown(self):
        outbox = self.outbox
        if outbox.journal is None:  # never started (the spool could not be opened)
            return
        if outbox.encoding is not None:
            yield outbox.encoding
        messages = self.buffer.release_all()
        if messages:
            log.info("turok-gateway: shutting down, spooling {count} open window(s)", count=len(messages))
            yield self._release(messages, float("inf"))
        yield outbox.send_backlog(SHUTDOWN_SEND_SECONDS)
        self._report_bad_lines(force=True)
        outbox.close()
        log.info("turok-gateway: stopped; {counters}", counters=asdict(self.counters))

    # --- output -------------------------------------------------------------------------------
    def _check_schemas(self) -> None:
        """Schema files edited while running (``schema_watch.py``): points from now on follow them."""
        reload = self._schema_watch.poll()
        if reload is None:
            return
        (log.info if reload.schemas else log.error)("{line}", line=reload.describe("turok-gateway",
                                                                                  self._schema_watch.paths))
        if reload.schemas is None:
            return
        self.schemas = reload.schemas
        self.buffer.use_policy_lookup(self._policy)
        self._longest_retention = self.schemas.longest_retention
        self.outbox.use_schemas(self.schemas)

    def flush(self) -> None:
        """Release the closed windows to the outbox, drain the spool, keep the spool in shape."""
        self._check_schemas()
        self._report_bad_lines()
        now = self.clock()
        outbox = self.outbox
        if self._stats_log.ready("stats"):
            log.info("turok-gateway: {counters}; open windows {windows}, buffered points {points}; "
                     "spool {spool} bytes, backlog {backlog} bodies ({backlog_bytes} bytes)",
                     counters=asdict(self.counters), windows=self.buffer.open_windows,
                     points=self.buffer.buffered_points, spool=outbox.spool_bytes,
                     backlog=outbox.backlog_bodies, backlog_bytes=outbox.backlog_bytes)
        outbox.maintain(now, self.buffer.buffered_points)
        if outbox.encoding is None:
            self._release(self.buffer.release(now), now - self.config.window_grace_seconds)
        outbox.drain()
        outbox.check_pressure()

    def _release(self, messages: Sequence[TurokMessage], released_until: float) -> defer.Deferred:
        """Hand released windows to the outbox; a ``WindowBatch``'s groups are answered for a while longer."""
        groups = getattr(messages, "groups", None)
        if messages and groups is not None:
            self.recent.keep(groups)
        return self.outbox.release(messages, released_until)


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
    tcp = internet.TCPServer(config.plaintext_port, gateway.backpressure.pausing(tcp_factory),
                             interface=config.interface, reactor=reactor)
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
    pickle_tcp = internet.TCPServer(config.pickle_port, gateway.backpressure.pausing(pickle_factory),
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
    site = cache_site(gateway.recent.cached_points, gateway._count_cache_query)
    cache = internet.TCPServer(config.gateway_cache_port, site, interface=config.cache_interface, reactor=reactor)
    cache.setName("cache-query")
    cache.setServiceParent(top)
    return top
