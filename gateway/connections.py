"""What the gateway's TCP receivers (plaintext, pickle, StatsD) share: connection limits.

Each listener keeps at most ``max_connections`` connections open; one more is closed as soon as
it is accepted (``buildProtocol`` returns None), counted in ``connections_over_limit`` and logged
at most once per ``LOG_INTERVAL``, so thousands of idle sockets cost a bounded amount of memory
while the connections already open keep being served. A connection that has sent nothing for
``idle_timeout_seconds`` is closed (``idle_closed``); carbon has no such timeout, 300 s by default
is thirty times collectd's 10 s interval, and 0 turns it off. One sweep per listener, every
quarter of the timeout (at most every 30 s), finds the idle ones, so a read costs one clock call
and a connection closes between one and one and a quarter timeouts after its last byte.

With the line and frame limits this bounds what clients can make a listener hold:
``max_connections`` times (``max_line_length`` for a partial plaintext or StatsD line, or
``max_pickle_frame_bytes`` for a partial pickle frame), plus the kernel's socket buffers.

``configure_receivers`` applies a ``TurokConfig`` to every receiver of a gateway service tree.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from twisted.application import internet, service
from twisted.internet import task
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from turok_core.model.metric_names import NameRule
from turok_core.runtime.ratelimit import Throttle

if TYPE_CHECKING:
    from turok_core.model.config import TurokConfig

log = Logger(namespace="turok.gateway")

LOG_INTERVAL = 10.0  # seconds between two log lines of one kind
MAX_SWEEP_INTERVAL = 30.0
MIN_SWEEP_INTERVAL = 0.05


@dataclass(frozen=True)
class ConnectionLimits:
    """``max_connections`` per listener; ``idle_timeout`` seconds (0: connections never time out)."""
    max_connections: int = 1024
    idle_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")
        if self.idle_timeout < 0:
            raise ValueError(f"idle_timeout_seconds must not be negative, got {self.idle_timeout}")

    @classmethod
    def from_config(cls, config: "TurokConfig") -> "ConnectionLimits":
        return cls(config.max_connections, float(config.idle_timeout_seconds))


@dataclass
class ConnectionCounters:
    """A listener's connection counters (pickle and StatsD keep the same fields in their own)."""
    connections: int = 0  # accepted
    connections_over_limit: int = 0  # closed at once: max_connections were already open
    idle_closed: int = 0  # closed after idle_timeout_seconds without a byte


class ConnectionGuard:
    """One listener's open connections, its connection limit and its idle sweep.

    ``counters`` is any object with ``ConnectionCounters``' fields."""

    def __init__(self, receiver: str, counters, clock: Callable[[], float],
                 limits: ConnectionLimits = ConnectionLimits(), reactor=None) -> None:
        self.receiver = receiver
        self.counters = counters
        self.clock = clock
        self.limits = limits
        self.open: set[Protocol] = set()
        self._reactor = reactor
        self._sweep: Optional[task.LoopingCall] = None
        self._log = Throttle(clock, LOG_INTERVAL)

    def admit(self, addr) -> bool:
        """Whether a new connection from ``addr`` may open; counted and logged when not."""
        if len(self.open) < self.limits.max_connections:
            return True
        counters = self.counters
        counters.connections_over_limit += 1
        if self._log.ready("over-limit"):
            log.warn("turok-gateway: {receiver}: closed a connection from {peer}: {limit} connections already "
                     "open (max_connections); {total} closed so far", receiver=self.receiver,
                     peer=getattr(addr, "host", "?"), limit=self.limits.max_connections,
                     total=counters.connections_over_limit)
        return False

    def opened(self, protocol: Protocol) -> None:
        protocol.last_active = self.clock()
        self.open.add(protocol)
        self.counters.connections += 1

    def closed(self, protocol: Protocol) -> None:
        self.open.discard(protocol)

    def start(self) -> None:
        """Start the idle sweep and check the descriptor limit (the listener started listening)."""
        self._check_descriptors()
        timeout = self.limits.idle_timeout
        if timeout <= 0 or self._sweep is not None:
            return
        self._sweep = task.LoopingCall(self.sweep)
        if self._reactor is not None:
            self._sweep.clock = self._reactor
        interval = min(max(timeout / 4, MIN_SWEEP_INTERVAL), MAX_SWEEP_INTERVAL)
        self._sweep.start(interval, now=False).addErrback(
            lambda failure: log.failure("turok-gateway: {receiver}: idle sweep died", failure,
                                        receiver=self.receiver))

    def stop(self) -> None:
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        self._sweep = None

    def sweep(self) -> int:
        """Close the connections silent for the idle timeout; returns how many."""
        deadline = self.clock() - self.limits.idle_timeout
        idle = [protocol for protocol in self.open if protocol.last_active <= deadline]
        for protocol in idle:
            self.open.discard(protocol)  # counted once even if the close takes a while
            protocol.transport.loseConnection()
        if idle:
            self.counters.idle_closed += len(idle)
            if self._log.ready("idle"):
                log.info("turok-gateway: {receiver}: closed {count} connection(s) idle for {timeout}s "
                         "(idle_timeout_seconds); {total} so far", receiver=self.receiver, count=len(idle),
                         timeout=self.limits.idle_timeout, total=self.counters.idle_closed)
        return len(idle)

    def _check_descriptors(self) -> None:
        # past the process's descriptor limit accept() fails before max_connections is reached
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (OSError, ValueError):
            return
        if soft != resource.RLIM_INFINITY and soft < self.limits.max_connections + 64:
            log.warn("turok-gateway: {receiver}: max_connections {limit} is near the process's open-file limit "
                     "{soft} (ulimit -n); raise it, or new connections will fail before the limit",
                     receiver=self.receiver, limit=self.limits.max_connections, soft=soft)


class GuardedProtocol(Protocol):
    """A receiver connection registered with its factory's ``ConnectionGuard``.

    Subclasses call ``super()`` in ``connectionMade``/``connectionLost`` and set
    ``self.last_active`` to the guard's clock in ``dataReceived``. Built without a factory
    (``guard`` None) it is not limited."""

    guard: Optional[ConnectionGuard] = None
    last_active: float = 0.0

    def connectionMade(self) -> None:
        if self.guard is not None:
            self.guard.opened(self)

    def connectionLost(self, reason=None) -> None:
        if self.guard is not None:
            self.guard.closed(self)


class GuardedFactory(Factory):
    """A receiver factory with a connection limit and an idle timeout; subclasses define
    ``make_protocol(addr)``. ``name_rule`` is the metric-name rule its connections apply."""

    def __init__(self, receiver: str, counters, clock: Callable[[], float],
                 limits: ConnectionLimits = ConnectionLimits(), reactor=None) -> None:
        self.guard = ConnectionGuard(receiver, counters, clock, limits, reactor)
        self.name_rule = NameRule()

    def configure(self, config: "TurokConfig") -> None:
        """Take the limits and the name rule of ``config`` (before the listener starts)."""
        self.guard.limits = ConnectionLimits.from_config(config)
        self.name_rule = NameRule(config.max_metric_name_bytes)

    def make_protocol(self, addr) -> GuardedProtocol:
        raise NotImplementedError

    def buildProtocol(self, addr) -> Optional[GuardedProtocol]:
        if not self.guard.admit(addr):
            return None  # the port closes the socket
        protocol = self.make_protocol(addr)
        protocol.factory = self
        protocol.guard = self.guard
        return protocol

    def startFactory(self) -> None:
        self.guard.start()

    def stopFactory(self) -> None:
        self.guard.stop()


def configure_receivers(parent: service.IServiceCollection, config: "TurokConfig",
                        receiver_counters: Optional[dict] = None) -> None:
    """Apply ``config``'s limits and name rule to every receiver listening under ``parent``
    (TCP factories and UDP protocols with a ``configure`` method); with ``receiver_counters``
    (the gateway's self-metrics registry) also register the listeners' own
    ``ConnectionCounters`` under the listener's service name with ``-`` as ``_``
    (``plaintext_tcp``)."""
    for child in parent:
        if not isinstance(child, (internet.TCPServer, internet.UDPServer)):
            continue
        receiver = child.args[1]  # (port, factory or protocol)
        configure = getattr(receiver, "configure", None)
        if configure is None:
            continue
        configure(config)
        guard = getattr(receiver, "guard", None)
        # pickle and StatsD count connections in counters the gateway registers already
        if receiver_counters is not None and guard is not None and type(guard.counters) is ConnectionCounters:
            receiver_counters[(child.name or guard.receiver).replace("-", "_")] = guard.counters
