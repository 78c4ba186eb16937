"""Queues for tests: the memory queue with an outage switch, and a reader of what a queue got."""
from __future__ import annotations

from turok_core.model.message import TurokMessage
from turok_core.wire.codec import decode_body
from turok_core.wire.memory_queue import MemoryQueue


class OutageQueue(MemoryQueue):
    """A ``MemoryQueue`` whose sends fail while ``failing`` is set (SQS unreachable)."""
    failing = False

    def send(self, bodies) -> int:
        if self.failing:
            raise ConnectionError("injected outage")
        return super().send(bodies)


class QueueReader:
    """Every body that reached ``queue`` (any queue implementation), received and deleted."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.bodies: list[str] = []

    def poll(self) -> list[str]:
        """Take what the queue holds now; returns the bodies new to this reader."""
        new: list[str] = []
        while True:
            received = self.queue.receive(10, 0)
            if not received:
                break
            new.extend(m.body for m in received)
            self.queue.delete([m.receipt_handle for m in received])
        self.bodies.extend(new)
        return new

    @property
    def messages(self) -> list[TurokMessage]:
        """The Turok messages of every body read so far, the queue's new ones included."""
        self.poll()
        return [m for body in self.bodies for m in decode_body(body)]
