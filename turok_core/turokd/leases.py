"""Pure lease decisions for turokd: from the lease table's view, what to renew, take and give back.

No I/O and no clock of its own (``now`` is passed in), so it runs on a fake clock in tests. The
fair share of a turokd is ``ceil(partitions / live)``, ``live`` counting every turokd whose worker
item or some lease has not expired, and this one. A turokd under its share takes free or expired
leases; one over its share gives back the excess (after writing those partitions' open blocks:
``lease_holder.py`` and the service do that), so a joining turokd finds free leases within a
heartbeat or two instead of stealing held ones and making their owner drop its open blocks. A
lease this turokd believed it held but the table shows with another owner or counter is lost.
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
    plan = LeasePlan(share=fair_share(partitions, len(live_workers(view, me, now))))
    kept: list[Lease] = []
    for partition, lease in sorted(held.items()):
        current = view.leases.get(partition)
        if current is None or current.owner != me or current.counter != lease.counter:
            plan.lost.append(partition)
        else:
            kept.append(lease)
    excess = len(kept) - plan.share
    if excess > 0:
        # give back the most recently taken (highest counter last taken is unknowable; the
        # highest partitions are as good and keep the choice stable between heartbeats)
        plan.release = [lease.partition for lease in kept[-excess:]]
        kept = kept[:-excess]
    plan.renew = kept
    wanted = plan.share - len(kept)
    if wanted > 0:
        # start at a place of our own, so turokd joining together try different partitions first
        offset = zlib.crc32(me.encode("utf-8")) % max(1, partitions)
        for step in range(partitions):
            partition = (offset + step) % partitions
            seen = view.leases.get(partition)
            if partition in held or (seen is not None and not seen.free_at(now)):
                continue
            plan.take.append((partition, seen))
            if len(plan.take) == wanted:
                break
    return plan
