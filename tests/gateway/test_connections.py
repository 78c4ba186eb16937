"""gateway.connections in-process: the connection limit and the idle sweep, on a fake clock."""
from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from gateway.connections import ConnectionLimits
from gateway.pickle_receiver import CarbonPickleFactory
from gateway.plaintext_receivers import PlaintextTCPFactory
from gateway.statsd_receivers import StatsdTCPFactory
from tests.support.pickle_frames import encode_frame
from turok_core.statsd.parse import StatsdAggregator

ADDR = IPv4Address("TCP", "127.0.0.1", 40000)


class ClosingTransport(StringTransport):
    """Tells the protocol it is gone when closed, as a real transport does a moment later."""

    def __init__(self, protocol) -> None:
        super().__init__()
        self.protocol = protocol

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.protocol.connectionLost(None)


def factories(clock: task.Clock, limits: ConnectionLimits):
    sink = lambda parsed, source: None  # noqa: E731
    yield PlaintextTCPFactory(sink, clock.seconds, 4096, limits, clock)
    yield CarbonPickleFactory(sink, clock.seconds, 1 << 20, 0, limits, clock)
    yield StatsdTCPFactory(StatsdAggregator(), 8192, limits, clock.seconds, clock)


def connect(factory):
    protocol = factory.buildProtocol(ADDR)
    if protocol is not None:
        protocol.makeConnection(ClosingTransport(protocol))
    return protocol


@pytest.mark.parametrize("index", [0, 1, 2])
def test_connections_past_the_limit_are_refused_and_counted(index):
    clock = task.Clock()
    factory = list(factories(clock, ConnectionLimits(max_connections=3, idle_timeout=0)))[index]
    factory.doStart()
    kept = [connect(factory) for _ in range(3)]
    assert all(kept) and connect(factory) is None and connect(factory) is None
    counters = factory.guard.counters
    assert (counters.connections, counters.connections_over_limit) == (3, 2)
    kept[0].transport.loseConnection()
    assert connect(factory) is not None
    assert (counters.connections, counters.connections_over_limit) == (4, 2)
    factory.doStop()


@pytest.mark.parametrize("index, keepalive", [(0, b"\n"), (1, encode_frame([])), (2, b"\n")])
def test_idle_connections_are_closed_and_busy_ones_kept(index, keepalive):
    clock = task.Clock()
    factory = list(factories(clock, ConnectionLimits(max_connections=10, idle_timeout=100)))[index]
    factory.doStart()
    idle, busy = connect(factory), connect(factory)
    for _ in range(12):  # 120 s, a read every 10 s
        clock.advance(10)
        busy.dataReceived(keepalive)
    assert idle.transport.disconnecting and not busy.transport.disconnecting
    assert factory.guard.counters.idle_closed == 1
    clock.advance(125)  # busy falls silent: gone within a timeout and a quarter
    assert busy.transport.disconnecting
    assert factory.guard.counters.idle_closed == 2 and not factory.guard.open
    factory.doStop()
    assert not clock.getDelayedCalls()


def test_limits_are_checked():
    with pytest.raises(ValueError):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError):
        ConnectionLimits(idle_timeout=-1)
    clock = task.Clock()
    factory = next(factories(clock, ConnectionLimits(idle_timeout=0)))
    factory.doStart()
    assert not clock.getDelayedCalls()  # no timeout, no sweep
    factory.doStop()
