"""Which metric names turokd still has to announce on the index queue, in bounded memory.

Announcing is at least once: a name may be announced again (after a failed send, past the
memory bound, at each UTC day), never lost, since the indexer adds a known name harmlessly.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

from turok_core.model.resolution import SECONDS_PER_DAY


class Announcer:
    """Which metric names still need announcing to the index queue.

    ``new_names`` hands out names neither announced nor being announced (plus those whose send
    failed), so concurrent pollers do not announce a name twice; ``mark_announced`` records a
    successful send and ``announce_failed`` puts names back for the next call. The memory is
    bounded: past ``max_names`` it starts over, and announcing a name again is harmless. It also
    starts over at each UTC day (by ``clock``): the keeper drops from the index names with no
    data left, and a name that comes back must be announced again.
    """

    def __init__(self, max_names: int = 2_000_000, clock: Callable[[], float] = time.time) -> None:
        self._announced: set[str] = set()
        self._in_flight: set[str] = set()
        self._failed: dict[str, None] = {}  # insertion-ordered set
        self._max_names = max_names
        self._clock = clock
        self._day = int(clock()) // SECONDS_PER_DAY

    def new_names(self, names: Iterable[str]) -> list[str]:
        """Names to announce now; they count as in flight until marked announced or failed."""
        day = int(self._clock()) // SECONDS_PER_DAY
        if day != self._day:
            self._day, self._announced = day, set()
        announced, in_flight = self._announced, self._in_flight
        fresh = dict.fromkeys(self._failed)
        self._failed = {}
        for name in names:
            if name not in announced and name not in in_flight:
                fresh[name] = None
        in_flight.update(fresh)
        return list(fresh)

    def mark_announced(self, names: Iterable[str]) -> None:
        """Record that ``names`` reached the index queue."""
        if len(self._announced) >= self._max_names:
            self._announced = set()
        for name in names:
            self._in_flight.discard(name)
            self._announced.add(name)
        self._shrink_in_flight()

    def announce_failed(self, names: Iterable[str]) -> None:
        """The send of ``names`` failed: hand them out again on the next ``new_names``."""
        for name in names:
            if name in self._in_flight:
                self._in_flight.discard(name)
                self._failed[name] = None
        self._shrink_in_flight()

    def _shrink_in_flight(self) -> None:
        # a set keeps its table at its largest size: the first batch of every name held would
        # leave room for all of them in a set that is empty between sends
        if not self._in_flight:
            self._in_flight = set()

    def __len__(self) -> int:
        return len(self._announced)
