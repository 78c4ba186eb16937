"""The SQS messages one partition holds, and when each needs a longer visibility timeout.

turokd receives messages with the queue's visibility timeout but holds them until their blocks
are written, which may be later: ``HeldReceipts`` says which to extend, and by how much, so SQS
neither redelivers them nor counts them toward the dead-letter queue while their data is in
memory. A held message stays invisible until a margin past the time it becomes deletable: at
most ``VISIBILITY_MARGIN``, never more than the queue's own timeout, so a turokd that dies holding
it lets SQS redeliver it within about one configured visibility timeout of its blocks' close.
Pure bookkeeping; the service sends the ChangeMessageVisibility calls (``show_again``, blocking,
for messages a partition no longer holds).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from turok_core.wire.queues import SQS_BATCH_ENTRIES, Queue

VISIBILITY_MARGIN = 60  # seconds a held message stays invisible past the time it becomes deletable, at most


def visibility_margin(timeout: float) -> float:
    """Seconds a held message stays invisible past the time it becomes deletable, for a queue
    whose visibility timeout is ``timeout``: an operator's short timeout (quick redelivery after
    a crash) is kept, not stretched to ``VISIBILITY_MARGIN``."""
    return min(VISIBILITY_MARGIN, max(timeout, 1))


def show_again(queue: Queue, receipts: Sequence[str]) -> None:
    """Make messages visible at once, best effort (otherwise SQS shows them after their
    visibility timeout): a batch refused, e.g. for a stale receipt, does not hide the others."""
    for start in range(0, len(receipts), SQS_BATCH_ENTRIES):
        try:
            queue.change_visibility([(r, 0) for r in receipts[start:start + SQS_BATCH_ENTRIES]])
        except Exception:
            pass


class HeldReceipts:
    """Receipt handle → (when its blocks are all written, when SQS would show it again)."""

    def __init__(self, timeout: float, tick_seconds: float) -> None:
        self.timeout = timeout
        self.tick_seconds = tick_seconds
        self.margin = visibility_margin(timeout)
        self._until: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._until)

    def receipts(self) -> list[str]:
        return list(self._until)

    def track(self, held: Iterable[tuple[float, str]], now: float) -> list[tuple[str, int]]:
        """Hold a batch's ``(deletable from, receipt)``; those that must wait past the timeout
        come back with the seconds to extend them by."""
        waiting = []
        for deadline, receipt in held:
            self._until[receipt] = (deadline, now + self.timeout)
            if deadline - now + self.margin > self.timeout:
                waiting.append(receipt)
        return self._extend(waiting, now)

    def expiring(self, now: float) -> list[tuple[str, int]]:
        """Held messages about to become visible again (a slow or failing write), extended."""
        soon = now + max(self.margin / 2, 2 * self.tick_seconds)
        return self._extend([receipt for receipt, (_deadline, until) in self._until.items() if until <= soon], now)

    def done(self, receipts: Iterable[str]) -> None:
        """Deleted: no longer held."""
        for receipt in receipts:
            self._until.pop(receipt, None)

    def _extend(self, receipts: list[str], now: float) -> list[tuple[str, int]]:
        longer = []
        for receipt in receipts:
            deadline, _until = self._until[receipt]
            seconds = max(deadline - now, 0) + self.margin
            self._until[receipt] = (deadline, now + seconds)
            longer.append((receipt, int(seconds)))
        return longer
