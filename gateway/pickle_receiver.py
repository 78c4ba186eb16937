"""Carbon pickle receiver (TCP): length-prefixed pickled batches handed to the gateway's sink.

Each read is cut into frames (``FrameReader``) and all its complete frames are decoded as one
batch (``decode_frames``). What happens to bad input, always counted in the factory's
``PickleCounters`` and logged at most once per interval per kind:

- a bad point (wrong shape, bad path, value or timestamp) is dropped, the others of its frame kept;
- a frame that is not a pickled list is skipped and the connection stays open (carbon's way);
- a frame that tries to load a class or call a function, or whose length prefix is over
  ``max_frame_bytes``, closes the connection at once (an oversized frame's body is never read);
- a frame cut short by the disconnect is counted as truncated;
- paths go through the metric-name rule (``turok_core.model.metric_names``), refused ones are bad points.

The listener has the gateway's connection limit and idle timeout (``gateway.connections``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.logger import Logger

from gateway.connections import ConnectionLimits, GuardedFactory, GuardedProtocol
from turok_core.parse.batch import ParsedLines
from turok_core.parse.carbon_pickle import DEFAULT_MAX_FRAME_BYTES, FrameReader, decode_frames
from turok_core.runtime.ratelimit import Throttle

log = Logger(namespace="turok.gateway")

Sink = Callable[[ParsedLines, str], None]  # accept(parsed, source)
LOG_INTERVAL = 10.0  # seconds between two log lines of one kind


@dataclass
class PickleCounters:
    frames: int = 0  # frames decoded, good or bad
    points: int = 0  # good points handed to the sink
    bad_points: int = 0  # dropped (NaN values are not bad: the sink counts them as nan_dropped)
    bad_frames: int = 0  # not a pickled list of points: skipped
    unsafe_frames: int = 0  # tried to run code: refused, connection closed
    oversize_frames: int = 0  # length prefix over the limit: connection closed before the body
    truncated_frames: int = 0  # incomplete when the connection closed
    connections: int = 0
    connections_refused: int = 0  # closed by the gateway (unsafe or oversize frame)
    connections_over_limit: int = 0  # closed at once: max_connections were already open
    idle_closed: int = 0  # closed after idle_timeout_seconds without a byte


class CarbonPickleProtocol(GuardedProtocol):
    """One pickle connection; see the module notes for how bad input is handled."""

    def __init__(self, factory: "CarbonPickleFactory") -> None:
        self.factory = factory
        self._reader = FrameReader(factory.max_frame_bytes)
        self._source = "pickle"
        self._refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        peer = self.transport.getPeer()
        self._source = f"pickle {getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        factory = self.factory
        self.last_active = now = factory.clock()
        frames = self._reader.feed(data)
        if frames:
            batch = decode_frames(frames, now, factory.max_path_bytes, factory.name_rule)
            factory.record(batch, self._source)
            if batch.unsafe:
                self._refuse()
                return
        if self._reader.oversize:
            factory.record_oversize(self._reader.oversize, self._source)
            self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        self.factory.counters.connections_refused += 1
        self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        if not self._refused and self._reader.pending:
            self.factory.record_truncated(self._reader.pending, self._source)


class CarbonPickleFactory(GuardedFactory):
    """Builds pickle connections sharing one sink, one set of counters, the log throttle, the
    connection limits and the name rule (``configure`` takes them from a TurokConfig).

    ``max_path_bytes`` > 0 makes longer metric paths bad points (the plaintext line limit)."""

    def __init__(self, sink: Sink, clock: Callable[[], float],
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, max_path_bytes: int = 0,
                 limits: ConnectionLimits = ConnectionLimits(), reactor=None) -> None:
        self.counters = PickleCounters()
        super().__init__("pickle", self.counters, clock, limits, reactor)
        self.sink = sink
        self.clock = clock
        self.max_frame_bytes = max_frame_bytes
        self.max_path_bytes = max_path_bytes
        self._log = Throttle(clock, LOG_INTERVAL)

    def make_protocol(self, addr) -> CarbonPickleProtocol:
        return CarbonPickleProtocol(self)

    def record(self, batch, source: str) -> None:
        """Count a decoded batch, hand its points to the sink, log what was wrong with it."""
        counters = self.counters
        parsed = batch.parsed
        counters.frames += batch.frames
        counters.points += len(parsed.names)
        counters.bad_points += parsed.bad  # the gateway counts and logs them as bad input lines
        if parsed.names or parsed.nan_dropped or parsed.bad:
            self.sink(parsed, source)
        if batch.bad_frames:
            counters.bad_frames += batch.bad_frames
            if self._log.ready("bad-frame"):
                log.warn("turok-gateway: skipped {count} pickle frame(s) that are not a pickled list of "
                         "points ({total} in all), e.g. from {source}: {example}", count=batch.bad_frames,
                         total=counters.bad_frames, source=source, example=batch.bad_frame_example)
        if batch.unsafe:
            counters.unsafe_frames += 1
            if self._log.ready("unsafe"):
                log.error("turok-gateway: refused a pickle frame from {source} that tries to run code "
                          "({reason}); connection closed ({total} such frame(s) in all)",
                          source=source, reason=batch.unsafe, total=counters.unsafe_frames)

    def record_oversize(self, length: int, source: str) -> None:
        self.counters.oversize_frames += 1
        if self._log.ready("oversize"):
            log.warn("turok-gateway: pickle frame of {length} bytes from {source} is over the {limit}-byte "
                     "limit; connection closed ({total} in all)", length=length, source=source,
                     limit=self.max_frame_bytes, total=self.counters.oversize_frames)

    def record_truncated(self, pending: int, source: str) -> None:
        self.counters.truncated_frames += 1
        if self._log.ready("truncated"):
            log.warn("turok-gateway: connection from {source} closed inside a pickle frame ({pending} bytes "
                     "held); frame dropped ({total} in all)", source=source, pending=pending,
                     total=self.counters.truncated_frames)
