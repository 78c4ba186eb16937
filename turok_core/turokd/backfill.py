"""Old slot values from any producer, stored in the archive whisper would store them in.

The gateway already windows an old point at the step of the first archive covering its age
(``windows/buffer.py``). Other producers do not: the design's JSON message, turok-lib, bodies a
gateway spooled through a long outage. ``route_by_age`` moves a decoded slot value whose age
(``now - slot``) is past the retention of its own step's archive into the metric's first archive
covering that age (``schemas.archive_for_age``), at that archive's slot; several values landing
in one coarse slot are aggregated with the metric's method (as the gateway's windows do). turokd
then writes the coarse slot like any other and rolls it up from there. A value older than every
archive of its metric stays where it was sent (the gateway drops such points, as whisper does;
a replay of old bodies or another producer's are stored, and go with their day tables).

``slack`` seconds are allowed past a retention before a value moves: a window the gateway sent
at its base step while young enough is not moved for the seconds or minutes it spent in SQS
(moving it would replace a coarse slot rolled up from many finer values by one value). Values
at a step that is no archive of the metric's current schema (an older schema's) stay where they
are. Pure: no I/O.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

from turok_core.model.aggregation import aggregate
from turok_core.model.schemas import MetricPolicy, SchemaSet, archive_for_age
from turok_core.turokd.decode import DecodedBatch

ROUTE_SLACK_SECONDS = 3600.0  # past a retention before turokd moves a slot value (module doc)

Key = tuple[int, int]  # (step, slot start)


def shortest_retentions(schemas: SchemaSet) -> dict[int, int]:
    """For each step any schema archive uses, the shortest retention among those archives: a
    window younger than it needs no per-metric look."""
    shortest: dict[int, int] = {}
    for _name, archives in schemas.archive_sets():
        for archive in archives:
            shortest[archive.step] = min(shortest.get(archive.step, archive.retention), archive.retention)
    return shortest


def route_by_age(batch: DecodedBatch, policy_of: Callable[[str], Optional[MetricPolicy]],
                 shortest: Mapping[int, int], now: float, slack: float = ROUTE_SLACK_SECONDS) -> int:
    """Move ``batch``'s too-old slot values to the archive covering their age (module doc);
    returns how many moved. The receipts' keys follow the values, so a message is held until
    the blocks its values went to are written."""
    moved: dict[Key, dict[str, tuple[str, list[float]]]] = {}
    went: dict[Key, set[Key]] = {}
    count = 0
    for key in list(batch.windows):
        step, slot = key
        age = now - slot
        if age <= shortest.get(step, math.inf) + slack:
            continue  # the usual window: young enough for every schema's archive at its step
        window = batch.windows[key]
        for metric in list(window):
            policy = policy_of(metric)
            own = None if policy is None else next((a for a in policy.archives if a.step == step), None)
            if policy is None or own is None or age <= own.retention + slack:
                continue
            target = archive_for_age(policy.archives, age)
            if target is None:
                continue  # older than every archive: stays (module doc)
            value = window.pop(metric)
            count += 1
            new_key = (target.step, slot - slot % target.step)
            went.setdefault(key, set()).add(new_key)
            moved.setdefault(new_key, {}).setdefault(metric, (policy.aggregation_type, []))[1].append(value)
        if not window:
            del batch.windows[key]
    for new_key, metrics in moved.items():
        window = batch.windows.setdefault(new_key, {})
        for metric, (method, values) in metrics.items():
            if metric in window:
                values.insert(0, window[metric])
            window[metric] = aggregate(method, values)
    if went:
        for index, (receipt, keys) in enumerate(batch.accepted):
            routed = {k for k in keys if k in batch.windows} | {n for k in keys for n in went.get(k, ())}
            batch.accepted[index] = (receipt, sorted(routed))
    return count
