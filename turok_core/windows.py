"""Resolution-aligned windows: the gateway's buffer between parsed points and Turok messages.

A window is one metric's values for one slot of ``step`` seconds (the base resolution of the
metric's schema), starting at ``slot = ts - ts % step``. Windows are kept grouped by
``(slot, step, aggregation_type)`` so ``release`` inspects groups (a few per resolution in
flight), not metrics. A window is released once ``slot + step + grace <= now``: the grace lets
points that arrive a little late still join their window.

Late data: a point whose window was already released is buffered again in a fresh window and
released at the next ``release`` call, as a second message for the same slot. turokd sets the
slot to that message's aggregate: the last write wins, as whisper does for a timestamp, so a
point later than the grace replaces its slot's value instead of joining it.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from .message import TurokMessage

Policy = tuple[int, str]  # (step seconds, aggregation type)
DEFAULT_POLICY_CACHE_SIZE = 1_000_000


class WindowBuffer:
    """Points grouped into open windows until their slot (plus grace) has passed."""

    def __init__(self, policy_lookup: Callable[[str], Policy], grace_seconds: int,
                 policy_cache_size: int = DEFAULT_POLICY_CACHE_SIZE) -> None:
        self._lookup = policy_lookup
        self.grace_seconds = grace_seconds
        self._cache_size = policy_cache_size
        # metric -> shared (step, aggregation) tuple, or None when no policy applies
        self._policies: dict[str, Optional[Policy]] = {}
        self._interned: dict[Policy, Policy] = {}
        # (slot, step, aggregation) -> metric -> values in arrival order
        self._groups: dict[tuple[int, int, str], dict[str, list[float]]] = {}
        self._open_windows = 0
        self._buffered_points = 0
        self.rejected_points = 0  # points of metrics no policy matches (lookup raised ValueError)

    @property
    def open_windows(self) -> int:
        """Windows holding at least one point, not yet released."""
        return self._open_windows

    @property
    def buffered_points(self) -> int:
        """Points in open windows."""
        return self._buffered_points

    def add_points(self, names: Sequence[str], values: Sequence[float], timestamps: Sequence[int]) -> int:
        """Buffer parallel lists of points into their windows; returns how many were buffered."""
        policies = self._policies
        groups = self._groups
        last_key = last_group = None
        added = new_windows = rejected = 0
        for name, value, ts in zip(names, values, timestamps):
            try:
                step, aggregation = policies[name]
            except KeyError:
                policy = self._policy(name)
                if policy is None:
                    rejected += 1
                    continue
                step, aggregation = policy
            except TypeError:  # cached None: no policy for this metric
                rejected += 1
                continue
            key = (ts - ts % step, step, aggregation)
            if key == last_key:  # the usual case: a chunk's points share a timestamp
                group = last_group
            else:
                group = groups.get(key)
                if group is None:
                    group = groups[key] = {}
                last_key, last_group = key, group
            window = group.get(name)
            if window is None:
                group[name] = [value]
                new_windows += 1
            else:
                window.append(value)
            added += 1
        self._open_windows += new_windows
        self._buffered_points += added
        self.rejected_points += rejected
        return added

    def _policy(self, name: str) -> Optional[Policy]:
        if len(self._policies) >= self._cache_size:
            self._policies.clear()  # bounded memory for a churn of names; lookups just repeat
        try:
            step, aggregation = self._lookup(name)
        except ValueError:
            policy = None
        else:
            policy = self._interned.setdefault((int(step), aggregation), (int(step), aggregation))
        self._policies[name] = policy
        return policy

    def release(self, now: float) -> list[TurokMessage]:
        """Messages for every window with ``slot + step + grace <= now``, forgetting them."""
        grace = self.grace_seconds
        closed = sorted(key for key in self._groups if key[0] + key[1] + grace <= now)
        return self._take(closed)

    def release_all(self) -> list[TurokMessage]:
        """Messages for every window, open or not (at shutdown)."""
        return self._take(sorted(self._groups))

    def _take(self, keys) -> list[TurokMessage]:
        messages: list[TurokMessage] = []
        for key in keys:
            slot, step, aggregation = key
            group = self._groups.pop(key)
            messages.extend(TurokMessage(metric, slot, values, step, aggregation)
                            for metric, values in group.items())
            self._open_windows -= len(group)
            self._buffered_points -= sum(map(len, group.values()))
        return messages
