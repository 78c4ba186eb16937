"""HeldReceipts: which held SQS messages get a longer visibility, and by how much."""
from __future__ import annotations

from turok_core.turokd.held_receipts import VISIBILITY_MARGIN, HeldReceipts, show_again, visibility_margin


def test_a_message_due_within_the_timeout_keeps_the_queues_visibility():
    held = HeldReceipts(timeout=1200, tick_seconds=1)
    assert held.track([(1000.0 + 600, "r1")], now=1000.0) == []
    assert held.expiring(1000.0) == []


def test_a_message_held_past_the_timeout_is_extended_a_margin_past_its_deadline():
    held = HeldReceipts(timeout=1200, tick_seconds=1)
    assert held.track([(1000.0 + 1500, "r1")], now=1000.0) == [("r1", 1500 + VISIBILITY_MARGIN)]


def test_a_short_visibility_timeout_bounds_the_margin():
    """A queue with a 10 s timeout: a held message is visible again 10 s past its deadline (where a
    turokd that died holding it would otherwise hide it for a whole minute), renewed while held."""
    assert visibility_margin(10) == 10 and visibility_margin(1200) == VISIBILITY_MARGIN
    assert visibility_margin(0) == 1  # never an extension to 0 s: that would show it at once
    held = HeldReceipts(timeout=10, tick_seconds=1)
    assert held.track([(1002.0, "r1"), (1000.0, "r2")], now=1000.0) == [("r1", 12)]
    assert held.expiring(1001.0) == []  # r1 invisible until 1012, r2 until 1010
    assert held.expiring(1006.0) == [("r2", 10)]  # r2 overdue: renewed a timeout's worth
    held.done(["r1", "r2"])
    assert len(held) == 0 and held.expiring(1020.0) == []


class _RefusingQueue:
    """Records change_visibility batches; refuses the first."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []

    def change_visibility(self, entries):
        self.batches.append(list(entries))
        if len(self.batches) == 1:
            raise RuntimeError("ReceiptHandleIsInvalid")


def test_show_again_sends_batches_of_ten_and_a_refused_batch_does_not_hide_the_rest():
    queue = _RefusingQueue()
    receipts = [f"r{i}" for i in range(23)]
    show_again(queue, receipts)
    assert [len(batch) for batch in queue.batches] == [10, 10, 3]
    assert [r for batch in queue.batches for r, _ in batch] == receipts
    assert all(timeout == 0 for batch in queue.batches for _, timeout in batch)
