"""The indexer's pending batch: announced names gathered from many messages for one index write.

``PendingNames`` collects the names of decoded announcements (each distinct name once, in
arrival order) and the receipt handles of the messages that carried them, and remembers when
its first message arrived (by the caller's clock), so the service knows when its coalescing
window ends. The service swaps a full batch for an empty one before it writes, so names arriving
during the write wait in the next batch; a batch's messages are deleted only after its write.
"""
from __future__ import annotations

from typing import Iterable, Optional


class PendingNames:
    """Names and receipt handles waiting for one write of the index."""

    def __init__(self) -> None:
        self._names: dict[str, None] = {}  # an insertion-ordered set
        self.handles: list[str] = []
        self.since: Optional[float] = None  # when its first message arrived; None while empty

    def add(self, names: Iterable[str], handle: str, now: float) -> None:
        """Take one message's names and its receipt handle, received at ``now``."""
        self._names.update(dict.fromkeys(names))
        self.handles.append(handle)
        if self.since is None:
            self.since = now

    @property
    def names(self) -> list[str]:
        """The distinct names, in the order they first arrived."""
        return list(self._names)

    def __len__(self) -> int:
        """How many distinct names wait."""
        return len(self._names)

    def __bool__(self) -> bool:
        """Whether any message waits (a message may carry only names already pending)."""
        return bool(self.handles)

    def due_in(self, window: float, now: float) -> float:
        """Seconds until the coalescing window of ``window`` seconds from the first message ends
        (0 when it has; the whole window while empty)."""
        if self.since is None:
            return window
        return max(0.0, self.since + window - now)
