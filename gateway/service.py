"""The gateway service: plaintext listeners → WindowBuffer → Turok messages on SQS.

``GatewayService`` owns the window buffer and the counters. Every
``config.flush_interval_seconds`` it releases the windows that have closed (slot + step +
grace) and encodes and sends them from its AWS thread pool, never on the reactor thread; at
most one send is in flight. Bodies whose send failed are kept in memory (bounded, oldest
dropped first) and retried with the next flush. ``stopService`` releases every window, open or
not, and returns a Deferred that fires once they are sent (or given up on). Every
``config.self_metrics_interval_seconds`` its counters go into its own windows as
``turok.agents.<agent>.gateway.*`` points (``turok_core.selfmetrics``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from twisted.application import internet, service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from turok_core.aws import make_client
from turok_core.codec import encode_messages
from turok_core.config import TurokConfig
from turok_core.message import TurokMessage
from turok_core.plaintext import ParsedLines
from turok_core.queues import MessageQueue, QueueSendError, batch_bodies
from turok_core.ratelimit import Throttle
from turok_core.schemas import load_schemas
from turok_core.selfmetrics import flatten_counters
from turok_core.services.selfmetrics_loop import SelfMetricsLoop
from turok_core.services.threads import start_aws_threadpool
from turok_core.windows import WindowBuffer

from .pickle import CarbonPickleFactory
from .plaintext import PlaintextTCPFactory, PlaintextUDPProtocol
from .statsd import add_statsd_services
from .udp import UDP_MAX_PACKET_SIZE

log = Logger(namespace="turok.gateway")

BAD_LINE_LOG_INTERVAL = 10.0  # seconds between two reports of malformed input
ERROR_LOG_INTERVAL = 30.0
STATS_LOG_INTERVAL = 60.0
MAX_RETRY_BYTES = 64 * 1024 * 1024  # unsent bodies kept for retry (a disk spool is future work)
SHUTDOWN_SEND_ROUNDS = 3


@dataclass
class GatewayCounters:
    points_received: int = 0  # good points handed to the window buffer
    points_rejected: int = 0  # points of metrics no schema matches
    bad_lines: int = 0
    nan_dropped: int = 0
    messages_encoded: int = 0  # windows released and encoded into bodies
    messages_unencodable: int = 0
    bodies_sent: int = 0
    bytes_sent: int = 0
    send_errors: int = 0  # flushes where some bodies could not be sent (kept for retry)
    bodies_dropped: int = 0  # unsent bodies dropped because the retry list was full
    # per receiving protocol (plaintext_tcp, plaintext_udp, pickle, statsd, …): the key is
    # accept's ``protocol`` argument; reported as turok.agents.<agent>.gateway.<field>.<protocol>
    points_by_protocol: dict[str, int] = field(default_factory=dict)
    bad_lines_by_protocol: dict[str, int] = field(default_factory=dict)


@dataclass
class _SendResult:
    """What one encode+send round did, computed in the pool and applied on the reactor."""
    messages: int = 0
    unencodable: int = 0
    bodies: int = 0
    bytes: int = 0
    unsent: list[str] = field(default_factory=list)
    error: Optional[BaseException] = None


class GatewayService(service.Service):
    """Window buffer, periodic flush to SQS and counters; ``accept`` is the listeners' sink."""

    name = "turok-gateway-flush"

    def __init__(self, config: TurokConfig, reactor=None, clock: Optional[Callable[[], float]] = None,
                 queue: Optional[MessageQueue] = None, max_retry_bytes: int = MAX_RETRY_BYTES,
                 pool=None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.clock: Callable[[], float] = clock or reactor.seconds
        self.counters = GatewayCounters()
        self._reactor = reactor
        self._queue = queue
        self._max_retry_bytes = max_retry_bytes
        schemas = load_schemas(config)

        def policy(metric: str) -> tuple[int, str]:
            found = schemas.policy_for(metric)
            return found.step, found.aggregation_type

        self.buffer = WindowBuffer(policy, config.window_grace_seconds)
        self._longest_retention = schemas.longest_retention
        self.receiver_counters: dict[str, object] = {}  # receiver name → its counters dataclass
        self._pool = pool  # None: startService starts the AWS thread pool
        self._loop: Optional[task.LoopingCall] = None
        self._self_metrics: Optional[SelfMetricsLoop] = None
        self._retry: list[str] = []
        self._in_flight: Optional[defer.Deferred] = None
        self._idle_waiters: list[defer.Deferred] = []
        self._bad_pending = 0
        self._bad_example: Optional[tuple[bytes, str]] = None
        self._bad_log = Throttle(self.clock, BAD_LINE_LOG_INTERVAL)
        self._error_log = Throttle(self.clock, ERROR_LOG_INTERVAL)
        self._stats_log = Throttle(self.clock, STATS_LOG_INTERVAL)

    # --- input (reactor thread) ---------------------------------------------------------------
    def accept(self, parsed: ParsedLines, source: str = "", protocol: str = "") -> None:
        """Take a parsed chunk: good points into windows, bad lines counted and reported.

        ``protocol`` keys the per-protocol counters (default: ``source``'s first word)."""
        counters = self.counters
        protocol = protocol or source.partition(" ")[0] or "other"
        now = int(self.clock())
        parsed.drop_out_of_range(now - self._longest_retention, now + self.config.max_future_seconds)
        if parsed.names:
            rejected_before = self.buffer.rejected_points
            added = self.buffer.add_points(parsed.names, parsed.values, parsed.timestamps)
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

    def _report_bad_lines(self, force: bool = False) -> None:
        if not self._bad_pending or not (self._bad_log.ready("bad-lines") or force):
            return
        example, source = self._bad_example or (b"", "")
        log.warn("turok-gateway: {count} malformed input line(s) ignored ({total} in all); "
                 "e.g. from {source}: {example!r}",
                 count=self._bad_pending, total=self.counters.bad_lines, source=source, example=example)
        self._bad_pending = 0
        self._bad_example = None

    def sink(self, protocol: str) -> Callable[[ParsedLines, str], None]:
        """``accept`` for one listener, counting its points under ``protocol``."""
        def accept(parsed: ParsedLines, source: str = "") -> None:
            self.accept(parsed, source, protocol)
        return accept

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
                                                 "retry_bodies": len(self._retry)}

    @property
    def retry_bodies(self) -> int:
        """Bodies whose send failed, waiting for the next flush."""
        return len(self._retry)

    # --- lifecycle ----------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        config = self.config
        if self._pool is None:
            self._pool = start_aws_threadpool(self._reactor, config.aws_threads, "turok-gateway-aws")
        if self._queue is None:
            self._queue = MessageQueue.from_config(make_client("sqs", config), config, config.queue_name)
        log.info("turok-gateway: plaintext on {interface} tcp/{tcp} udp/{udp}, pickle on tcp/{pickle}, "
                 "windows closing {grace}s after their slot, flush every {flush}s to SQS queue {queue}",
                 interface=config.interface, tcp=config.plaintext_port, udp=config.plaintext_udp_port,
                 pickle=config.pickle_port,
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
        # the gateway's own points go straight into its windows, flushed like any others
        self._self_metrics = SelfMetricsLoop(config, "gateway", self.self_metrics, self.buffer.add_points,
                                             self._reactor, log, self.clock)
        self._self_metrics.start()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._self_metrics is not None:
            self._self_metrics.stop()
        return self._drain()

    @defer.inlineCallbacks
    def _drain(self):
        yield self._when_idle()
        for _ in range(SHUTDOWN_SEND_ROUNDS):
            messages = self.buffer.release_all()
            if not messages and not self._retry:
                break
            log.info("turok-gateway: shutting down, sending {count} open window(s)", count=len(messages))
            yield self._send(messages)
        self._report_bad_lines(force=True)
        if self._retry:
            log.error("turok-gateway: shut down with {count} unsent bodies; their points are lost",
                      count=len(self._retry))
        log.info("turok-gateway: stopped; {counters}", counters=asdict(self.counters))

    # --- output -------------------------------------------------------------------------------
    def flush(self) -> defer.Deferred:
        """Release the closed windows and send them (with bodies awaiting retry) in the pool."""
        self._report_bad_lines()
        if self._stats_log.ready("stats"):
            log.info("turok-gateway: {counters}; open windows {windows}, buffered points {points}",
                     counters=asdict(self.counters), windows=self.buffer.open_windows,
                     points=self.buffer.buffered_points)
        if self._in_flight is not None:
            return self._when_idle()
        return self._send(self.buffer.release(self.clock()))

    def _send(self, messages: list[TurokMessage]) -> defer.Deferred:
        retry, self._retry = self._retry, []
        if not messages and not retry:
            return defer.succeed(None)
        self._in_flight = sending = self._in_pool(self._encode_and_send, messages, retry)
        waiter = self._when_idle()
        sending.addCallback(self._sent)
        sending.addErrback(self._send_crashed, retry)
        sending.addBoth(self._idle)
        return waiter

    def _in_pool(self, function, *args) -> defer.Deferred:
        return deferToThreadPool(self._reactor, self._pool, function, *args)

    def _encode_and_send(self, messages: list[TurokMessage], retry: list[str]) -> _SendResult:
        """Pool thread: encode ``messages``, then send the retried bodies first and the new ones."""
        result = _SendResult(messages=len(messages))
        bodies = list(retry)
        limit = self.config.sqs_max_message_bytes
        if messages:
            try:
                bodies.extend(encode_messages(messages, limit, self.config.sqs_compression_level))
            except Exception:  # one message that cannot be encoded must not sink the others
                for message in messages:
                    try:
                        bodies.extend(encode_messages([message], limit))
                    except Exception:
                        result.unencodable += 1
        for batch in batch_bodies(bodies, limit):
            if result.error is not None:  # the queue is failing: keep the rest for the next flush
                result.unsent.extend(batch)
                continue
            try:
                self._queue.send(batch)
                sent = batch
            except QueueSendError as exc:
                result.error = exc
                result.unsent.extend(exc.bodies)
                unsent = set(exc.bodies)
                sent = [body for body in batch if body not in unsent]
            except Exception as exc:
                result.error = exc
                result.unsent.extend(batch)
                sent = []
            result.bodies += len(sent)
            result.bytes += sum(map(len, sent))
        return result

    def _sent(self, result: _SendResult) -> None:
        counters = self.counters
        counters.messages_encoded += result.messages - result.unencodable
        counters.messages_unencodable += result.unencodable
        counters.bodies_sent += result.bodies
        counters.bytes_sent += result.bytes
        if result.unencodable and self._error_log.ready("unencodable"):
            log.error("turok-gateway: {count} message(s) could not be encoded and were dropped",
                      count=result.unencodable)
        if result.error is not None:
            counters.send_errors += 1
            self._keep_for_retry(result.unsent)
            if self._error_log.ready("send"):
                log.error("turok-gateway: sending to SQS queue {queue} failed, {count} bodies kept for "
                          "retry: {error}", queue=self.config.queue_name, count=len(self._retry),
                          error=result.error)

    def _send_crashed(self, failure, retry: list[str]) -> None:
        # _encode_and_send catches everything it expects; keep at least the retried bodies
        self.counters.send_errors += 1
        self._keep_for_retry(retry)
        log.failure("turok-gateway: encode/send crashed", failure)

    def _keep_for_retry(self, bodies: list[str]) -> None:
        kept = bodies + self._retry
        size = sum(map(len, kept))
        dropped = 0
        while kept and size > self._max_retry_bytes:
            size -= len(kept.pop(0))  # the oldest go first
            dropped += 1
        self._retry = kept
        if dropped:
            self.counters.bodies_dropped += dropped
            log.error("turok-gateway: retry list full ({limit} bytes): dropped {count} unsent bodies",
                      limit=self._max_retry_bytes, count=dropped)

    def _idle(self, _) -> None:
        self._in_flight = None
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _when_idle(self) -> defer.Deferred:
        if self._in_flight is None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter


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
    tcp = internet.TCPServer(config.plaintext_port, tcp_factory, interface=config.interface, reactor=reactor)
    tcp.setName("plaintext-tcp")
    tcp.setServiceParent(top)
    udp_protocol = PlaintextUDPProtocol(gateway.sink("plaintext_udp"), gateway.clock, config.max_line_length)
    udp = internet.UDPServer(config.plaintext_udp_port, udp_protocol, interface=config.interface,
                             maxPacketSize=UDP_MAX_PACKET_SIZE, reactor=reactor)
    udp.setName("plaintext-udp")
    udp.setServiceParent(top)
    # Carbon pickle on pickle_port; longer paths than a plaintext line could carry are bad points
    pickle_factory = CarbonPickleFactory(gateway.sink("pickle"), gateway.clock, config.max_pickle_frame_bytes,
                                         config.max_line_length)
    pickle_tcp = internet.TCPServer(config.pickle_port, pickle_factory, interface=config.interface,
                                    reactor=reactor)
    pickle_tcp.setName("pickle-tcp")
    pickle_tcp.setServiceParent(top)
    gateway.receiver_counters["pickle"] = pickle_factory.counters
    # StatsD on statsd_port (UDP and TCP): its flusher hands each flush to the windows
    statsd = add_statsd_services(top, config, gateway.sink("statsd"), reactor, gateway.clock)
    gateway.receiver_counters["statsd"] = statsd.aggregator.totals
    return top
