"""An SQS queue in memory, behind the interface of ``queues.MessageQueue``, for tests and tools.

It keeps SQS's rules as Turok relies on them: a received message is invisible for the
visibility timeout (the call's, else the queue's), then received again with a higher receive
count and a new receipt handle until it is deleted with its latest handle; ``change_visibility``
moves that moment; with ``dead_letters`` a message received ``max_receives`` times goes to that
queue on its next receive, as SQS's redrive policy does. A body longer than
``max_message_bytes`` is refused with ``QueueSendError``. ``clock`` (epoch seconds) is the one
time source, so a test makes timeouts pass without waiting. Thread-safe: the services call
their queue from a thread pool.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from turok_core.wire.queues import MAX_VISIBILITY, SQS_BATCH_ENTRIES, QueueSendError, ReceivedMessage, batch_bodies


@dataclass
class _Stored:
    body: str
    message_id: str
    sent_timestamp: float
    visible_at: float
    receive_count: int = 0
    receipt_handle: Optional[str] = None  # the latest receive's; earlier ones no longer delete


class MemoryQueue:
    """One queue in memory, with ``MessageQueue``'s ``send``, ``receive``, ``delete`` and
    ``change_visibility``."""

    def __init__(self, name: str = "memory", visibility_timeout: int = 30, max_message_bytes: int = 262144,
                 dead_letters: Optional["MemoryQueue"] = None, max_receives: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.visibility_timeout = visibility_timeout
        self._max_message_bytes = max_message_bytes
        self._dead_letters = dead_letters
        self._max_receives = max_receives
        self._clock = clock
        self._messages: OrderedDict[str, _Stored] = OrderedDict()  # message id → message, in send order
        self._by_handle: dict[str, str] = {}  # latest receipt handle → message id
        self._ids = itertools.count(1)
        self._changed = threading.Condition()  # notified on send and visibility changes (long polls)

    @property
    def url(self) -> str:
        return f"memory://{self.name}"

    def __len__(self) -> int:
        """Messages not deleted, visible or not (SQS's approximate counts, added up)."""
        with self._changed:
            return len(self._messages)

    def send(self, bodies: Iterable[str]) -> int:
        """Queue every body; returns the SendMessageBatch calls SQS would take for them.

        Raises ``QueueSendError`` listing the bodies over ``max_message_bytes`` (the others are sent).
        """
        sendable: list[str] = []
        too_long: list[str] = []
        for body in bodies:
            (too_long if len(body.encode("utf-8")) > self._max_message_bytes else sendable).append(body)
        now = self._clock()
        with self._changed:
            for body in sendable:
                message_id = f"memory-{next(self._ids)}"
                self._messages[message_id] = _Stored(body, message_id, now, visible_at=now)
            self._changed.notify_all()
        if too_long:
            raise QueueSendError(f"{len(too_long)} bodies to {self.name} unsent: longer than "
                                 f"{self._max_message_bytes} bytes", too_long)
        return len(batch_bodies(sendable, self._max_message_bytes))

    def receive(self, max_messages: int = SQS_BATCH_ENTRIES, wait_seconds: int = 20,
                visibility_timeout: int | None = None) -> list[ReceivedMessage]:
        """Up to ``max_messages`` visible messages, waiting up to ``wait_seconds`` (real time) for one."""
        timeout = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        deadline = time.monotonic() + wait_seconds
        with self._changed:
            while True:
                received = self._take_visible(max_messages, timeout)
                left = deadline - time.monotonic()
                if received or left <= 0:
                    return received
                # a message made visible by ``clock`` alone does not wake this: wait in short steps
                self._changed.wait(min(left, 0.05))

    def _take_visible(self, max_messages: int, timeout: int) -> list[ReceivedMessage]:
        now = self._clock()
        received: list[ReceivedMessage] = []
        for message in list(self._messages.values()):
            if len(received) >= max_messages:
                break
            if message.visible_at > now:
                continue
            if self._dead_letters is not None and message.receive_count >= self._max_receives:
                self._forget(message)
                self._dead_letters._redrive(message)
                continue
            message.receive_count += 1
            if message.receipt_handle is not None:
                del self._by_handle[message.receipt_handle]
            message.receipt_handle = f"{message.message_id}#{message.receive_count}"
            self._by_handle[message.receipt_handle] = message.message_id
            message.visible_at = now + max(0, min(MAX_VISIBILITY, timeout))
            received.append(ReceivedMessage(message.body, message.receipt_handle, message.message_id,
                                            message.receive_count, message.sent_timestamp))
        return received

    def _redrive(self, message: _Stored) -> None:
        """Take a message moved here by another queue's redrive policy (same id, sent time)."""
        with self._changed:
            self._messages[message.message_id] = _Stored(message.body, message.message_id,
                                                         message.sent_timestamp, self._clock())
            self._changed.notify_all()

    def _forget(self, message: _Stored) -> None:
        del self._messages[message.message_id]
        if message.receipt_handle is not None:
            del self._by_handle[message.receipt_handle]

    def delete(self, receipt_handles: Sequence[str]) -> None:
        """Delete messages by their latest receipt handles; other handles are ignored."""
        with self._changed:
            for handle in receipt_handles:
                message_id = self._by_handle.get(handle)
                if message_id is not None:
                    self._forget(self._messages[message_id])

    def change_visibility(self, entries: Sequence[tuple[str, int]]) -> None:
        """Keep held messages invisible ``seconds`` from now: ``(receipt handle, seconds)`` each."""
        now = self._clock()
        with self._changed:
            for handle, seconds in entries:
                message_id = self._by_handle.get(handle)
                if message_id is not None:
                    self._messages[message_id].visible_at = now + max(0, min(MAX_VISIBILITY, int(seconds)))
            self._changed.notify_all()
