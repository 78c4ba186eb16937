"""What every queue implementation must do, run against ``MemoryQueue`` and SQS on moto alike.

The services rely on these SQS rules: a received message stays invisible for its visibility
timeout, comes back with a higher receive count until deleted, can be kept invisible longer,
and moves to the dead-letter queue after too many receives.
"""
from __future__ import annotations

import inspect
import threading
import time

import pytest

from tests.conftest import QueueUnderTest
from turok_core.wire.memory_queue import MemoryQueue
from turok_core.wire.queues import MessageQueue, Queue, QueueSendError


@pytest.mark.parametrize("method", ["send", "receive", "delete", "change_visibility"])
def test_both_queues_take_the_calls_of_the_queue_protocol(method: str):
    def parameters(cls) -> list[tuple[str, object]]:  # names and defaults: callers pass both
        return [(p.name, p.default) for p in inspect.signature(getattr(cls, method)).parameters.values()]

    assert parameters(MessageQueue) == parameters(Queue) == parameters(MemoryQueue)


def receive_all(queue, expected: int, visibility_timeout=None) -> list:
    """Receive until ``expected`` messages came (SQS may answer with fewer than are visible)."""
    received: list = []
    for _ in range(10):
        received += queue.receive(10, 0, visibility_timeout)
        if len(received) >= expected:
            break
    return received


def test_sent_bodies_are_received_once_each_with_their_attributes(any_queue: QueueUnderTest):
    bodies = [f"body {i}" for i in range(25)]
    assert any_queue.queue.send(bodies) == 3  # SendMessageBatch takes ten entries
    received = receive_all(any_queue.queue, 25)
    assert sorted(m.body for m in received) == sorted(bodies)
    assert {m.receive_count for m in received} == {1}
    assert len({m.receipt_handle for m in received}) == len({m.message_id for m in received}) == 25
    assert all(m.sent_timestamp is not None for m in received)
    assert any_queue.queue.receive(10, 0) == []  # all invisible now


def test_receive_takes_at_most_max_messages(any_queue: QueueUnderTest):
    any_queue.queue.send([f"b{i}" for i in range(5)])
    assert 1 <= len(any_queue.queue.receive(2, 0)) <= 2


def test_a_long_poll_returns_a_message_sent_while_it_waits(any_queue: QueueUnderTest):
    sender = threading.Timer(0.3, any_queue.queue.send, [["late"]])
    sender.start()
    started = time.monotonic()
    try:
        received = any_queue.queue.receive(10, 5)
    finally:
        sender.join()
    assert [m.body for m in received] == ["late"] and time.monotonic() - started < 4


def test_a_message_not_deleted_comes_back_after_its_visibility_timeout(any_queue: QueueUnderTest):
    queue = any_queue.queue
    queue.send(["again"])
    [first] = receive_all(queue, 1)
    assert queue.receive(10, 0) == []
    any_queue.advance(any_queue.visibility_timeout)
    [second] = receive_all(queue, 1)
    assert (second.body, second.message_id, second.receive_count) == ("again", first.message_id, 2)
    assert second.receipt_handle != first.receipt_handle


def test_a_deleted_message_never_comes_back(any_queue: QueueUnderTest):
    queue = any_queue.queue
    queue.send(["gone", "kept"])
    received = receive_all(queue, 2)
    queue.delete([m.receipt_handle for m in received if m.body == "gone"])
    any_queue.advance(any_queue.visibility_timeout)
    assert [m.body for m in receive_all(queue, 1)] == ["kept"]


def test_receive_may_set_a_longer_visibility_timeout(any_queue: QueueUnderTest):
    queue = any_queue.queue
    queue.send(["held"])
    receive_all(queue, 1, visibility_timeout=any_queue.visibility_timeout + 2)
    any_queue.advance(any_queue.visibility_timeout)
    assert queue.receive(10, 0) == []
    any_queue.advance(2)
    assert [m.body for m in receive_all(queue, 1)] == ["held"]


def test_change_visibility_keeps_a_message_invisible_or_frees_it(any_queue: QueueUnderTest):
    queue = any_queue.queue
    queue.send(["longer", "sooner"])
    handles = {m.body: m.receipt_handle for m in receive_all(queue, 2, visibility_timeout=30)}
    queue.change_visibility([(handles["longer"], any_queue.visibility_timeout + 2), (handles["sooner"], 0)])
    assert [m.body for m in receive_all(queue, 1)] == ["sooner"]
    any_queue.advance(any_queue.visibility_timeout)
    assert queue.receive(10, 0) == []
    any_queue.advance(2)
    assert [m.body for m in receive_all(queue, 1)] == ["longer"]


def test_a_message_received_too_often_moves_to_the_dead_letter_queue(any_queue: QueueUnderTest):
    queue = any_queue.queue
    queue.send(["poison"])
    for count in range(1, any_queue.max_receives + 1):
        [message] = receive_all(queue, 1)
        assert message.receive_count == count
        any_queue.advance(any_queue.visibility_timeout)
    assert queue.receive(10, 0) == []  # this receive moved it
    assert [m.body for m in receive_all(any_queue.dead_letters, 1)] == ["poison"]


def test_a_body_over_the_size_limit_is_refused_and_the_others_sent(any_queue: QueueUnderTest):
    queue = any_queue.queue
    too_long = "x" * (any_queue.max_message_bytes + 1)
    with pytest.raises(QueueSendError) as refused:
        queue.send(["small", too_long, "other"])
    assert refused.value.bodies == [too_long]
    assert sorted(m.body for m in receive_all(queue, 2)) == ["other", "small"]
