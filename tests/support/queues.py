"""Queues for tests: the memory queue with an outage switch, and readers of what a queue got."""
from __future__ import annotations

from tests.conftest import wait_for
from turok_core.model.message import TurokMessage
from turok_core.runtime.aws import make_client
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


class SqsReader:
    """Collects and deletes every Turok message that reaches ``config``'s SQS queue (read with boto3 directly)."""

    def __init__(self, config) -> None:
        self.client = make_client("sqs", config)
        self.url = self.client.get_queue_url(QueueName=config.queue_name)["QueueUrl"]
        self.messages: list[TurokMessage] = []

    def poll(self) -> None:
        response = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            self.messages.extend(decode_body(message["Body"]))
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def wait_for_count(self, count: int, timeout: float) -> list[TurokMessage]:
        def enough():
            self.poll()
            return len(self.messages) >= count
        wait_for(enough, timeout, f"{count} messages (have {self.messages})", interval=0)
        return sorted(self.messages, key=lambda m: (m.metric, m.start_time))
