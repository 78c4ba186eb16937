"""SQS access for Turok: batched sends within SQS limits, long-poll receives, batched deletes.

Blocking boto3 calls: services run these methods in their AWS thread pool, never on the reactor.
``Queue`` is what the services call on a queue: ``MessageQueue`` here, ``MemoryQueue``
(``memory_queue.py``) in memory; ``tests/wire/test_queue_contract.py`` holds both to it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from turok_core.model.config import TurokConfig
from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import Backoff

SQS_BATCH_ENTRIES = 10
MAX_VISIBILITY = 43200  # SQS's longest visibility timeout: 12 hours
BACKOFF = Backoff(base=0.1, cap=5.0)


class QueueSendError(RuntimeError):
    """Some bodies could not be sent after every retry; they are listed in ``bodies``."""

    def __init__(self, message: str, bodies: list[str]) -> None:
        super().__init__(message)
        self.bodies = bodies


@dataclass(frozen=True)
class ReceivedMessage:
    body: str
    receipt_handle: str
    message_id: str
    receive_count: int
    sent_timestamp: float | None = None  # epoch seconds SQS accepted the message (SentTimestamp)


class Queue(Protocol):
    """The calls the services make on a queue (see ``MessageQueue`` for each one's contract)."""
    name: str

    def send(self, bodies: Iterable[str]) -> int: ...

    def receive(self, max_messages: int = SQS_BATCH_ENTRIES, wait_seconds: int = 20,
                visibility_timeout: int | None = None) -> list[ReceivedMessage]: ...

    def delete(self, receipt_handles: Sequence[str]) -> None: ...

    def change_visibility(self, entries: Sequence[tuple[str, int]]) -> None: ...


def batch_bodies(bodies: Sequence[str], max_batch_bytes: int) -> list[list[str]]:
    """Group bodies into SendMessageBatch calls: at most 10 entries and ``max_batch_bytes`` each."""
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode("utf-8")) if not body.isascii() else len(body)
        if current and (len(current) == SQS_BATCH_ENTRIES or size + length > max_batch_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(body)
        size += length
    if current:
        batches.append(current)
    return batches


class MessageQueue:
    """One SQS queue, by name; the URL is looked up once."""

    def __init__(self, client: AwsClient, name: str, max_message_bytes: int = 262144,
                 max_attempts: int = 6, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self.name = name
        self._url: str | None = None
        self._max_message_bytes = max_message_bytes
        self._max_attempts = max_attempts
        self._sleep = sleep

    @classmethod
    def from_config(cls, client: AwsClient, config: TurokConfig, name: str) -> "MessageQueue":
        return cls(client, name, config.sqs_max_message_bytes)

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._client.get_queue_url(QueueName=self.name)["QueueUrl"]
        return self._url

    def send(self, bodies: Iterable[str]) -> int:
        """Send every body with SendMessageBatch, retrying failed entries; returns calls made.

        Every batch is tried even when an earlier one failed; raises ``QueueSendError`` listing
        all bodies still unsent after ``max_attempts``.
        """
        calls = 0
        unsent: list[str] = []
        errors: list[str] = []
        for batch in batch_bodies(list(bodies), self._max_message_bytes):
            made, left, error = self._send_batch(batch)
            calls += made
            if left:
                unsent.extend(left)
                errors.append(error)
        if unsent:
            raise QueueSendError(f"{len(unsent)} bodies to {self.name} unsent: {errors[0]}", unsent)
        return calls

    def _send_batch(self, batch: list[str]) -> tuple[int, list[str], str]:
        """One SendMessageBatch with retries: (calls made, bodies still unsent, last error)."""
        calls, pending, error = 0, batch, ""
        for attempt in range(self._max_attempts):
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(pending)]
            try:
                response = self._client.send_message_batch(QueueUrl=self.url, Entries=entries)
                calls += 1
            except Exception as exc:  # network or service error: retry the whole batch
                error = f"SendMessageBatch failed: {exc}"
            else:
                failed = response.get("Failed", [])
                pending = [pending[int(f["Id"])] for f in sorted(failed, key=lambda f: int(f["Id"]))]
                if not pending:
                    return calls, [], ""
                error = f"entries kept failing: {failed[0].get('Code')} {failed[0].get('Message', '')}"
            if attempt + 1 < self._max_attempts:
                self._backoff(attempt)
        return calls, pending, error

    def receive(self, max_messages: int = SQS_BATCH_ENTRIES, wait_seconds: int = 20,
                visibility_timeout: int | None = None) -> list[ReceivedMessage]:
        """Long-poll for up to ``max_messages`` messages."""
        kwargs = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        response = self._client.receive_message(**kwargs)
        messages = []
        for m in response.get("Messages", []):
            attributes = m.get("Attributes", {})
            sent = attributes.get("SentTimestamp")  # milliseconds since the epoch, as a string
            messages.append(ReceivedMessage(m["Body"], m["ReceiptHandle"], m["MessageId"],
                                            int(attributes.get("ApproximateReceiveCount", "1")),
                                            int(sent) / 1000.0 if sent else None))
        return messages

    def delete(self, receipt_handles: Sequence[str]) -> None:
        """Delete messages (after what they carry is durable), retrying failed entries."""
        for start in range(0, len(receipt_handles), SQS_BATCH_ENTRIES):
            pending = list(receipt_handles[start:start + SQS_BATCH_ENTRIES])
            for attempt in range(self._max_attempts):
                entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(pending)]
                response = self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)
                failed = {int(f["Id"]) for f in response.get("Failed", [])}
                pending = [pending[i] for i in sorted(failed)]
                if not pending:
                    break
                self._backoff(attempt)
            # what is still pending reappears after its visibility timeout and is written again
            # idempotently, so a failed delete costs a rewrite, never data

    def change_visibility(self, entries: Sequence[tuple[str, int]]) -> None:
        """Keep held messages invisible longer: ``(receipt handle, seconds from now)`` each.

        Best effort: a message whose change failed reappears early and is written again
        idempotently, so a failure costs a rewrite, never data.
        """
        for start in range(0, len(entries), SQS_BATCH_ENTRIES):
            chunk = entries[start:start + SQS_BATCH_ENTRIES]
            self._client.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": max(0, min(MAX_VISIBILITY, int(seconds)))}
                for i, (handle, seconds) in enumerate(chunk)])

    def _backoff(self, attempt: int) -> None:
        self._sleep(BACKOFF.delay(attempt))
