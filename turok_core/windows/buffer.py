"""Resolution-aligned windows: the gateway's buffer between parsed points and Turok messages.

A window is one metric's values for one slot of ``step`` seconds (the base resolution of the
metric's schema), starting at ``slot = ts - ts % step``. Windows are kept grouped by
``(slot, step, aggregation_type)`` so ``release`` inspects groups (a few per resolution in
flight), not metrics. A window is released once ``slot + step + grace <= now``: the grace lets
points that arrive a little late still join their window. ``release`` hands the groups over as a
``WindowBatch``: the wire's ``GroupedWindows`` shape, which ``codec.encode_messages`` encodes
without a message object per window.

Late data: a point whose window was already released is buffered again in a fresh window and
released at the next ``release`` call, as a second message for the same slot. turokd sets the
slot to that message's aggregate: the last write wins, as whisper does for a timestamp, so a
point later than the grace replaces its slot's value instead of joining it.

Old points (backfill): given a clock and a policy that lists the metric's archives, a point older
than the first archive's retention goes into a window of the first archive that covers its age
(``schemas.archive_for_age``, whisper's rule), so turokd stores it there and rolls it up from
there; a point older than every retention is dropped and counted in ``expired_points``. Several
old points in one coarse slot are aggregated with the metric's method, as at the base step.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Sequence

from turok_core.model.aggregation import aggregate
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import DEFAULT_POLICY_CACHE_SIZE, Archive, PolicyCache, archive_for_age
from turok_core.wire.groups import Window, WindowGroup

# (base step seconds, aggregation type, the metric's archives; () routes every point to the base step)
Policy = tuple[int, str, tuple[Archive, ...]]
_NONE = object()


def window_values(window: Window) -> list[float]:
    """A window's values as a list (a one-value window holds the bare value)."""
    return window if isinstance(window, list) else [window]


class WindowBatch(Sequence[TurokMessage]):
    """Windows released together, kept in the buffer's groups (the wire's ``GroupedWindows``).

    It is a sequence of ``TurokMessage`` (built only when iterated or indexed), so callers that
    want messages get them, while ``codec.encode_messages`` reads ``groups`` directly: with one
    point per window, building a message object per window cost the gateway as much as adding
    the points.
    """
    __slots__ = ("groups", "_count", "_messages")

    def __init__(self, groups: list[WindowGroup]) -> None:
        self.groups = groups
        self._count = sum(len(group.windows) for group in groups)
        self._messages: Optional[list[TurokMessage]] = None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[TurokMessage]:
        if self._messages is not None:
            return iter(self._messages)
        return (TurokMessage(metric, slot, window_values(window), step, aggregation)
                for slot, step, aggregation, windows in self.groups for metric, window in windows.items())

    def __getitem__(self, index):
        if self._messages is None:
            self._messages = list(iter(self))
        return self._messages[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (WindowBatch, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WindowBatch({len(self.groups)} groups, {self._count} windows)"

    @property
    def points(self) -> int:
        """Values held by all the windows."""
        points = self._count
        for group in self.groups:
            windows = group.windows.values()
            if list in set(map(type, windows)):  # some window holds more than one value
                points += sum(len(window) - 1 for window in windows if type(window) is list)
        return points


def window_points(groups: Iterable[WindowGroup], metrics: Sequence[str], start: float, end: float,
                  into: dict[str, dict[int, dict[int, float]]]) -> None:
    """Add the aggregates of ``metrics``' windows in ``groups`` with slots in ``[start, end)`` to
    ``into`` (metric → step → slot → value): what the gateway answers a finder's cache query with."""
    wanted = list(dict.fromkeys(metrics))
    for slot, step, aggregation, windows in groups:
        if not start <= slot < end:
            continue
        for metric in wanted:
            window = windows.get(metric)
            if window is not None:
                into.setdefault(metric, {}).setdefault(step, {})[slot] = aggregate(aggregation, window_values(window))


class WindowBuffer:
    """Points grouped into open windows until their slot (plus grace) has passed."""

    def __init__(self, policy_lookup: Callable[[str], tuple], grace_seconds: int,
                 policy_cache_size: int = DEFAULT_POLICY_CACHE_SIZE,
                 clock: Optional[Callable[[], float]] = None) -> None:
        """``policy_lookup(name)``: ``(step, aggregation)``, or ``(step, aggregation, archives)``
        to route old points by age (with ``clock``, the time ages are measured from)."""
        self._lookup = policy_lookup
        self._clock = clock
        self._policy_cache_size = policy_cache_size
        self.grace_seconds = grace_seconds
        # metric -> shared (step, aggregation) tuple, or None when no policy applies
        self._policies: PolicyCache[Policy] = PolicyCache(self._interned_policy, policy_cache_size)
        self._interned: dict[Policy, Policy] = {}
        # (slot, step, aggregation) -> metric -> values in arrival order
        self._groups: dict[tuple[int, int, str], dict[str, Window]] = {}
        self._open_windows = 0
        self._buffered_points = 0
        self.rejected_points = 0  # points of metrics no policy matches (lookup raised ValueError)
        self.expired_points = 0  # points older than every archive of their metric (dropped)
        self._young = float("inf")  # the shortest first-archive retention of any policy interned

    @property
    def open_windows(self) -> int:
        """Windows holding at least one point, not yet released."""
        return self._open_windows

    @property
    def buffered_points(self) -> int:
        """Points in open windows."""
        return self._buffered_points

    def policies_of(self, names: Sequence[str]) -> list[Optional[Policy]]:
        """Each name's (step, aggregation), None for a name no policy matches; names not seen
        before are looked up (and cached) now.

        Pass the list on to ``add_points``: callers that need the steps first (the gateway's
        journal) then look each name up once, not twice."""
        found = list(map(self._policies.known.get, names))
        if None in found:  # new names (or names without a policy, cached as None)
            lookup = self._policies
            for i in [i for i, policy in enumerate(found) if policy is None]:
                found[i] = lookup(names[i])
        return found

    def add_points(self, names: Sequence[str], values: Sequence[float], timestamps: Sequence[int],
                   chunk_policies: Optional[list[Optional[Policy]]] = None) -> int:
        """Buffer parallel lists of points into their windows; returns how many were buffered.

        ``chunk_policies``: ``policies_of(names)``, when the caller has it already."""
        if not names:
            return 0
        if chunk_policies is None:
            chunk_policies = list(map(self._policies.known.get, names))
        # The usual chunk: one timestamp and one policy, so one group. Names new to it (one
        # point per window) go in with one dict update, no Python work per point: adding points
        # was the gateway's second-largest cost.
        ts = timestamps[0]
        policy = chunk_policies[0]
        now = self._clock() if self._clock is not None else None
        if (policy is None or chunk_policies.count(policy) != len(names)
                or timestamps.count(ts) != len(names)):
            if now is not None and now - min(timestamps) <= self._young and None not in chunk_policies:
                now = None  # no point of the chunk can be past its first archive: no per-point look
            return self._add_each(names, values, timestamps, chunk_policies, now)
        if now is not None and policy[2] and now - ts > policy[2][0].retention:  # old points (backfill)
            return self._add_each(names, values, timestamps, chunk_policies, now)
        step = policy[0]
        key = (ts - ts % step, step, policy[1])
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = {}
        if group.keys().isdisjoint(names):
            before = len(group)
            group.update(zip(names, values))
            new_windows = len(group) - before
            if new_windows != len(names):  # a name repeated within the chunk: undo, go point by point
                for name in names:
                    group.pop(name, None)  # (all were absent before the update)
                new_windows = self._add_to_group(group, names, values)
        else:
            new_windows = self._add_to_group(group, names, values)
        self._open_windows += new_windows
        self._buffered_points += len(names)
        return len(names)

    @staticmethod
    def _add_to_group(group: dict, names: Sequence[str], values: Sequence[float]) -> int:
        """Add points to one group's windows; returns how many windows they opened."""
        new_windows = 0
        for name, value in zip(names, values):
            # a window of one value holds the bare value (no list: less memory, less work)
            window = group.get(name, _NONE)
            if window is _NONE:
                group[name] = value
                new_windows += 1
            elif type(window) is list:
                window.append(value)
            else:
                group[name] = [window, value]
        return new_windows

    def _add_each(self, names: Sequence[str], values: Sequence[float], timestamps: Sequence[int],
                  chunk_policies: list[Optional[Policy]], now: Optional[float] = None) -> int:
        """Points of several timestamps or policies, or old ones: sorted out by group, then
        added per group."""
        lookup = self._policies
        groups = self._groups
        by_key: dict[tuple[int, int, str], tuple[dict, list, list]] = {}
        last_ts = last_policy = None
        group_names: list = []
        group_values: list = []
        rejected = expired = 0
        for name, value, ts, policy in zip(names, values, timestamps, chunk_policies):
            if policy is None:
                # not cached yet, or cached as having no policy
                policy = lookup(name)
                if policy is None:
                    rejected += 1
                    continue
            if ts != last_ts or policy is not last_policy:  # policies are interned: `is` suffices
                step = policy[0]
                archives = policy[2]
                if now is not None and archives and now - ts > archives[0].retention:
                    archive = archive_for_age(archives, now - ts)
                    if archive is None:
                        expired += 1
                        last_ts = None  # the next point needs its group found again
                        continue
                    step = archive.step
                key = (ts - ts % step, step, policy[1])
                pending = by_key.get(key)
                if pending is None:
                    group = groups.get(key)
                    if group is None:
                        group = groups[key] = {}
                    pending = by_key[key] = (group, [], [])
                _, group_names, group_values = pending
                last_ts, last_policy = ts, policy
            group_names.append(name)
            group_values.append(value)
        for group, group_names, group_values in by_key.values():
            self._open_windows += self._add_to_group(group, group_names, group_values)
        added = len(names) - rejected - expired
        self._buffered_points += added
        self.rejected_points += rejected
        self.expired_points += expired
        return added

    def use_policy_lookup(self, policy_lookup: Callable[[str], tuple]) -> None:
        """The schema files were edited: points from now on take their policy from
        ``policy_lookup`` (the cached policies are forgotten; open windows keep theirs)."""
        self._lookup = policy_lookup
        self._policies = PolicyCache(self._interned_policy, self._policy_cache_size)
        self._young = float("inf")

    def _interned_policy(self, name: str) -> Policy:
        """``name``'s policy as one tuple shared by every name that has it (``is`` compares them)."""
        found = self._lookup(name)
        policy: Policy = (int(found[0]), found[1], tuple(found[2]) if len(found) > 2 else ())
        if policy[2]:
            self._young = min(self._young, policy[2][0].retention)
        return self._interned.setdefault(policy, policy)

    def open_groups(self) -> list[WindowGroup]:
        """The open windows, grouped (for ``window_points``); a snapshot, safe to keep."""
        return [WindowGroup(*key, windows) for key, windows in self._groups.items()]

    def release(self, now: float) -> WindowBatch:
        """Every window with ``slot + step + grace <= now``, forgetting them."""
        grace = self.grace_seconds
        closed = sorted(key for key in self._groups if key[0] + key[1] + grace <= now)
        return self._take(closed)

    def release_all(self) -> WindowBatch:
        """Every window, open or not (at shutdown)."""
        return self._take(sorted(self._groups))

    def _take(self, keys: Iterable[tuple[int, int, str]]) -> WindowBatch:
        groups = self._groups
        taken = [WindowGroup(*key, groups.pop(key)) for key in keys]
        batch = WindowBatch(taken)
        self._open_windows -= len(batch)
        self._buffered_points -= batch.points
        return batch
