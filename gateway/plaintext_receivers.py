"""Carbon plaintext receivers (TCP and UDP) handing whole parsed chunks to the gateway.

Neither protocol works line by line: TCP reads go through ``StreamLines`` (complete lines
only, bounded partial tail) and then one ``parse_plaintext`` call; each UDP datagram is one
chunk whose last line needs no newline. Malformed lines, and names the metric-name rule
refuses, are counted by the sink and never close a connection. The TCP listener has the
gateway's connection limit and idle timeout (``gateway.connections``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from gateway.connections import ConnectionCounters, ConnectionLimits, GuardedFactory, GuardedProtocol
from gateway.udp import UDP_MAX_PACKET_SIZE, UDP_RECEIVE_BUFFER, enlarge_receive_buffer
from turok_core.model.metric_names import NameRule
from turok_core.parse.batch import ParsedLines
from turok_core.parse.plaintext import StreamLines, parse_plaintext

if TYPE_CHECKING:
    from turok_core.model.config import TurokConfig

log = Logger(namespace="turok.gateway")

Sink = Callable[[ParsedLines, str], None]  # accept(parsed, source)


class PlaintextTCPProtocol(GuardedProtocol):
    """One plaintext TCP connection: complete lines parsed a read at a time."""

    def __init__(self, sink: Sink, clock: Callable[[], float], max_line_length: int,
                 rule: NameRule) -> None:
        self._sink = sink
        self._clock = clock
        self._max_line_length = max_line_length
        self._rule = rule
        self._lines = StreamLines(max_line_length)
        self._discarded_seen = 0
        self._source = "tcp"

    def connectionMade(self) -> None:
        super().connectionMade()
        peer = self.transport.getPeer()
        self._source = f"tcp {getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def dataReceived(self, data: bytes) -> None:
        self.last_active = now = self._clock()
        lines = self._lines
        chunk = lines.feed(data)
        discarded = lines.discarded - self._discarded_seen
        if not chunk and not discarded:
            return
        parsed = parse_plaintext(chunk, now, self._max_line_length, self._rule) if chunk else ParsedLines()
        if discarded:
            self._discarded_seen = lines.discarded
            parsed.add_bad(lines.discarded_example, discarded,
                           b" (over the %d-byte line limit, discarded)" % self._max_line_length)
        self._sink(parsed, self._source)

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        # a line cut off by the disconnect may be truncated ("a.b 12" of "a.b 123 …"): refuse it
        tail = self._lines.pending
        if tail.strip():
            parsed = ParsedLines()
            parsed.add_bad(tail, note=b" (no newline before the connection closed)")
            self._sink(parsed, self._source)


class PlaintextTCPFactory(GuardedFactory):
    """Builds ``PlaintextTCPProtocol`` instances sharing one sink, the connection limits and
    the name rule (``configure`` takes them from a TurokConfig)."""

    def __init__(self, sink: Sink, clock: Callable[[], float], max_line_length: int,
                 limits: ConnectionLimits = ConnectionLimits(), reactor=None) -> None:
        super().__init__("plaintext TCP", ConnectionCounters(), clock, limits, reactor)
        self.sink = sink
        self.clock = clock
        self.max_line_length = max_line_length

    def make_protocol(self, addr) -> PlaintextTCPProtocol:
        return PlaintextTCPProtocol(self.sink, self.clock, self.max_line_length, self.name_rule)


class PlaintextUDPProtocol(DatagramProtocol):
    """Plaintext over UDP: each datagram is a chunk of lines (the last may lack its newline).

    Listen with ``maxPacketSize=UDP_MAX_PACKET_SIZE`` so large datagrams are not truncated.
    """

    maxPacketSize = UDP_MAX_PACKET_SIZE

    def __init__(self, sink: Sink, clock: Callable[[], float], max_line_length: int,
                 receive_buffer: int = UDP_RECEIVE_BUFFER) -> None:
        self._sink = sink
        self._clock = clock
        self._max_line_length = max_line_length
        self._receive_buffer = receive_buffer
        self.name_rule = NameRule()

    def configure(self, config: "TurokConfig") -> None:
        """Take the name rule of ``config`` (before the listener starts)."""
        self.name_rule = NameRule(config.max_metric_name_bytes)

    def startProtocol(self) -> None:
        enlarge_receive_buffer(self.transport, self._receive_buffer, "plaintext")

    def datagramReceived(self, datagram: bytes, addr) -> None:
        parsed = parse_plaintext(datagram, self._clock(), self._max_line_length, self.name_rule)
        if parsed.names or parsed.bad or parsed.nan_dropped:
            self._sink(parsed, f"udp {addr[0]}:{addr[1]}" if parsed.bad else "udp")
