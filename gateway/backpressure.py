"""Backpressure: past its spool bound the gateway stops reading TCP and drops UDP points.

``Backpressure.check`` is told the spool's size (journal + bodies, ``Outbox.spool_bytes``) after
every change that can move it. At ``spool_max_bytes`` it pauses every connection of the TCP
factories it wrapped (``pausing``: plaintext, pickle) and sets ``paused``, which makes the
service refuse and count droppable (UDP) points; below ``LOW_WATER`` of the bound it resumes
them. StatsD is not paused: its memory is one entry per key, and its flushes are journaled like
any point.
"""
from __future__ import annotations

from typing import Callable

from twisted.logger import Logger
from twisted.protocols import policies

from gateway.counters import GatewayCounters
from turok_core.runtime.ratelimit import Throttle

log = Logger(namespace="turok.gateway")

LOW_WATER = 0.8  # backpressure ends below this fraction of spool_max_bytes
LOG_INTERVAL = 10.0  # seconds between two reports of a pause or resume: a load at the bound flaps


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


class Backpressure:
    """Pauses the wrapped TCP factories while the spool is over ``limit`` bytes (see the module)."""

    def __init__(self, limit: int, counters: GatewayCounters, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.counters = counters
        self.paused = False
        self.factories: list[PausingFactory] = []
        self._log = Throttle(clock, LOG_INTERVAL)

    def pausing(self, factory) -> PausingFactory:
        """``factory`` wrapped so backpressure pauses its connections."""
        wrapped = PausingFactory(factory, lambda: self.paused)
        self.factories.append(wrapped)
        return wrapped

    def check(self, size: int, backlog_bodies: int) -> None:
        """Pause or resume input for a spool of ``size`` bytes (``backlog_bodies`` is logged)."""
        limit = self.limit
        if not self.paused and size >= limit:
            self.paused = True
            self.counters.backpressure_pauses += 1
            if self._log.ready("pause"):
                log.warn("turok-gateway: spool at {size} bytes, over its bound of {limit}: TCP input paused, "
                         "UDP points dropped until it is under {low} ({backlog} bodies wait for SQS; "
                         "{count} pause(s) so far)", size=size, limit=limit, low=int(limit * LOW_WATER),
                         backlog=backlog_bodies, count=self.counters.backpressure_pauses)
        elif self.paused and size < limit * LOW_WATER:
            self.paused = False
            if self._log.ready("resume"):
                log.info("turok-gateway: spool down to {size} bytes: input resumed", size=size)
        else:
            return
        for factory in self.factories:
            factory.set_paused(self.paused)
