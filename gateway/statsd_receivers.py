"""StatsD receivers (UDP and TCP) and the flush timer, around ``turok_core.statsd.parse.StatsdAggregator``.

Every datagram, and every TCP read's complete lines, goes whole into one
``StatsdAggregator.apply_datagram`` call. ``StatsdFlushService`` flushes the aggregator every
``statsd_flush_interval_seconds``, in the middle of each interval-aligned slot (so, with the
default schema's 10 s base resolution, each flush lands alone in its slot even when the reactor
runs a few seconds late), and hands the points, stamped with the flush time, to the gateway's
``accept`` like any other input; the bad lines of the interval go along so the gateway counts
and logs them under the ``statsd`` protocol. The TCP listener has the gateway's connection
limit and idle timeout (``gateway.connections``), counted in the aggregator's totals.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from twisted.application import internet, service
from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from gateway.connections import ConnectionLimits, GuardedFactory, GuardedProtocol
from gateway.udp import UDP_MAX_PACKET_SIZE, UDP_RECEIVE_BUFFER, enlarge_receive_buffer
from turok_core.model.config import TurokConfig
from turok_core.parse.batch import ParsedLines
from turok_core.parse.plaintext import StreamLines
from turok_core.statsd.parse import StatsdAggregator
from turok_core.statsd.settings import StatsdSettings

log = Logger(namespace="turok.gateway.statsd")

Sink = Callable[..., None]  # GatewayService.accept(parsed, source)
# StatsD is all UDP bursts: ask for more than plaintext's buffer (the kernel caps it anyway)
STATSD_RECEIVE_BUFFER = 2 * UDP_RECEIVE_BUFFER
SOURCE = "statsd"


class StatsdUDPProtocol(DatagramProtocol):
    """StatsD over UDP: each datagram is one batch of lines."""

    maxPacketSize = UDP_MAX_PACKET_SIZE

    def __init__(self, aggregator: StatsdAggregator, receive_buffer: int = STATSD_RECEIVE_BUFFER) -> None:
        self.aggregator = aggregator
        self._receive_buffer = receive_buffer

    def startProtocol(self) -> None:
        enlarge_receive_buffer(self.transport, self._receive_buffer, "statsd")

    def datagramReceived(self, datagram: bytes, addr) -> None:
        self.aggregator.apply_datagram(datagram)


class StatsdTCPProtocol(GuardedProtocol):
    """StatsD over TCP: newline-ended lines; an over-long line is dropped, a partial last one too."""

    def __init__(self, aggregator: StatsdAggregator, max_line_length: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.aggregator = aggregator
        self._clock = clock
        self._lines = StreamLines(max_line_length)
        self._discarded_seen = 0

    def dataReceived(self, data: bytes) -> None:
        self.last_active = self._clock()
        lines = self._lines
        chunk = lines.feed(data)
        if chunk:
            self.aggregator.apply_datagram(chunk)
        if lines.discarded != self._discarded_seen:
            self.aggregator.add_bad(lines.discarded_example.decode("utf-8", "replace") + "... (over the "
                                    f"{lines.max_line_length}-character line limit)",
                                    lines.discarded - self._discarded_seen)
            self._discarded_seen = lines.discarded

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        tail = self._lines.pending
        if tail.strip():  # cut off by the disconnect: perhaps truncated, so never applied
            self.aggregator.add_bad(tail.decode("utf-8", "replace") + " (no newline before the connection closed)")


class StatsdTCPFactory(GuardedFactory):
    """Builds ``StatsdTCPProtocol`` instances sharing one aggregator and the connection limits
    (keys go through the aggregator's own name rule, so ``configure`` only takes the limits)."""

    def __init__(self, aggregator: StatsdAggregator, max_line_length: int,
                 limits: ConnectionLimits = ConnectionLimits(), clock: Optional[Callable[[], float]] = None,
                 reactor=None) -> None:
        if clock is None:
            from twisted.internet import reactor as default_reactor
            clock = (reactor or default_reactor).seconds
        super().__init__("StatsD TCP", aggregator.totals, clock, limits, reactor)
        self.aggregator = aggregator
        self.max_line_length = max_line_length

    def make_protocol(self, addr) -> StatsdTCPProtocol:
        return StatsdTCPProtocol(self.aggregator, self.max_line_length, self.guard.clock)


class StatsdFlushService(service.Service):
    """Flushes the aggregator every interval, mid-slot, into ``sink`` (the gateway's ``accept``)."""

    name = "statsd-flush"

    def __init__(self, aggregator: StatsdAggregator, sink: Sink, reactor=None,
                 clock: Optional[Callable[[], float]] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.aggregator = aggregator
        self._sink = sink
        self._reactor = reactor
        self.clock: Callable[[], float] = clock or reactor.seconds
        self._loop: Optional[task.LoopingCall] = None
        self._pending = None

    def next_flush_delay(self) -> float:
        """Seconds until the middle of the current interval-aligned slot (or the next one)."""
        interval = self.aggregator.settings.flush_interval
        return (interval / 2 - self.clock()) % interval

    def startService(self) -> None:
        super().startService()
        settings = self.aggregator.settings
        log.info("statsd: flush every {interval}s, percent thresholds {pct}, legacy namespace {legacy}, "
                 "delete idle stats {delete}", interval=settings.flush_interval,
                 pct=list(settings.percent_thresholds), legacy=settings.legacy_namespace,
                 delete=settings.delete_idle_stats)
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = self._reactor
        self._pending = self._reactor.callLater(self.next_flush_delay(), self._start_loop)

    def _start_loop(self) -> None:
        self._pending = None
        done = self._loop.start(self.aggregator.settings.flush_interval, now=True)
        done.addErrback(lambda failure: log.failure("statsd: flush loop died", failure))

    def stopService(self):
        super().stopService()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        # what arrived since the last flush is not lost: its counts still add up in their slot
        if self.aggregator.packets_received:
            self.flush()

    def flush(self) -> int:
        """Flush the aggregator into the sink, stamped with the flush time; returns the points.

        Until the first StatsD packet arrives nothing is sent, so a gateway nobody sends StatsD to
        does not fill Graphite with StatsD's own counters."""
        if not self.aggregator.totals.packets_received:
            return 0
        try:
            names, values = self.aggregator.flush()
        except Exception:  # never let one bad flush stop the timer
            log.failure("statsd: flush failed")
            return 0
        timestamp = int(self.clock())
        parsed = ParsedLines(names, values, [timestamp] * len(names))
        bad = self.aggregator.take_bad_lines()
        if bad:
            count, examples = bad
            parsed.bad = count
            parsed.bad_examples = [example.encode("utf-8", "replace") for example in examples]
        # keys passed the name rule at ingest; this catches configured prefixes it refuses
        parsed.apply_name_rule(self.aggregator.name_rule)
        try:
            self._sink(parsed, SOURCE)
        except Exception:
            log.failure("statsd: the gateway refused a flush of {count} points", count=len(names))
            return 0
        return len(names)


def add_statsd_services(parent: service.MultiService, config: TurokConfig, sink: Sink, reactor=None,
                        clock: Optional[Callable[[], float]] = None) -> StatsdFlushService:
    """Add the StatsD flusher, then its TCP and UDP listeners on ``config.statsd_port``, to ``parent``.

    Add them after the gateway's flush service: a MultiService stops its children in reverse, so
    the listeners stop first, then the last StatsD flush reaches the gateway before it drains.
    The caller applies ``gateway.connections.configure_receivers`` to ``parent`` afterwards."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    aggregator = StatsdAggregator(StatsdSettings.from_config(config))
    flusher = StatsdFlushService(aggregator, sink, reactor, clock)
    flusher.setServiceParent(parent)
    tcp_factory = StatsdTCPFactory(aggregator, aggregator.settings.max_line_length,
                                   ConnectionLimits.from_config(config), flusher.clock, reactor)
    tcp = internet.TCPServer(config.statsd_port, tcp_factory, interface=config.interface, reactor=reactor)
    tcp.setName("statsd-tcp")
    tcp.setServiceParent(parent)
    udp = internet.UDPServer(config.statsd_port, StatsdUDPProtocol(aggregator), interface=config.interface,
                             maxPacketSize=UDP_MAX_PACKET_SIZE, reactor=reactor)
    udp.setName("statsd-udp")
    udp.setServiceParent(parent)
    return flusher
