"""Pure lease decisions for turokd: from the lease table's view, what to renew, take and give back.

No I/O and no clock of its own (``now`` is passed in), so it runs on a fake clock in tests. The
fair share of a turokd is ``ceil(partitions / live)``, ``live`` counting every turokd whose worker
item or some lease has not expired, and this one; its floor is ``partitions // live``. A turokd
under its share takes free or expired leases (only up to the floor while another is below it,
so free leases go to the starved first); one over its share gives back the excess, and while
another turokd is below the floor the one holding most (ties: the highest id) gives back one.
Giving back means writing those partitions' open blocks first (``lease_holder.py`` and the
service do that), so a joining turokd finds free leases within a heartbeat or two instead of
stealing held ones and making their owner drop its open blocks. A
lease this turokd believed it held but the table shows with another owner (or not at all) is
lost; one the table shows as its own is its own, at the table's counter, whether or not the
answer to the write that made it so arrived.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Mapping, Optional

from turok_core.storage.leases import Lease, LeaseView


@dataclass
class LeasePlan:
    """One heartbeat's decisions."""
    renew: list[Lease] = field(default_factory=list)  # held, and kept
    take: list[tuple[int, Optional[Lease]]] = field(default_factory=list)  # (partition, lease as seen)
    release: list[int] = field(default_factory=list)  # held beyond the fair share: give back
    lost: list[int] = field(default_factory=list)  # believed held, but the table says otherwise
    share: int = 0  # the fair share computed


def live_workers(view: LeaseView, me: str, now: float) -> set[str]:
    """Turokd processes alive at ``now``: worker items and lease owners not expired, and ``me``."""
    live = {worker for worker, expires in view.workers.items() if expires > now}
    live.update(lease.owner for lease in view.leases.values() if not lease.free_at(now))
    live.add(me)
    return live


def fair_share(partitions: int, workers: int) -> int:
    """The most partitions one of ``workers`` turokd should hold."""
    return math.ceil(partitions / max(1, workers))


def plan_leases(view: LeaseView, me: str, held: Mapping[int, Lease], partitions: int, now: float) -> LeasePlan:
    """What ``me``, holding ``held`` (partition → lease as last written), does at ``now``."""
    live = live_workers(view, me, now)
    plan = LeasePlan(share=fair_share(partitions, len(live)))
    floor = partitions // len(live)
    kept: list[Lease] = []
    for partition in sorted(held):
        current = view.leases.get(partition)
        if current is None or current.owner != me:
            plan.lost.append(partition)
        else:  # the table's counter: a renewal whose answer was lost may have bumped it
            kept.append(current)
    counts = {worker: 0 for worker in live}
    for lease in view.leases.values():
        if not lease.free_at(now) and lease.owner in counts:
            counts[lease.owner] += 1
    counts[me] = len(kept)
    starved = any(count < floor for worker, count in counts.items() if worker != me)
    excess = len(kept) - plan.share
    if excess <= 0 and starved and len(kept) > floor and max(counts.items(), key=lambda wc: (wc[1], wc[0]))[0] == me:
        excess = 1  # another turokd is below its share and all hold at most theirs: the richest gives one
    if excess > 0:
        # the highest partitions: any choice works, a stable one keeps heartbeats from flapping
        plan.release = [lease.partition for lease in kept[-excess:]]
        kept = kept[:-excess]
    plan.renew = kept
    # below the floor, or (once nobody else is) up to the share: free leases go to the starved first
    wanted = (floor if starved else plan.share) - len(kept)
    if wanted > 0 and not plan.release:
        # start at a place of our own, so turokd joining together try different partitions first
        offset = zlib.crc32(me.encode("utf-8")) % max(1, partitions)
        for step in range(partitions):
            partition = (offset + step) % partitions
            seen = view.leases.get(partition)
            # a live lease is taken only when it is this turokd's own (a take whose answer was lost)
            if partition in held or (seen is not None and not seen.free_at(now) and seen.owner != me):
                continue
            plan.take.append((partition, seen))
            if len(plan.take) == wanted:
                break
    return plan
