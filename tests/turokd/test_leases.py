"""turokd's lease decisions on a fake clock: fair share, taking, giving back, losing, and the
``PartitionLeases`` heartbeat over the in-memory lease table."""
from __future__ import annotations

from turok_core.storage.leases import Lease, LeaseView
from turok_core.storage.memory_leases import MemoryLeaseTable
from turok_core.turokd.lease_holder import PartitionLeases
from turok_core.turokd.leases import fair_share, live_workers, plan_leases
from turok_core.wire.partitions import partition_of


def view(leases=(), workers=None):
    return LeaseView({lease.partition: lease for lease in leases}, dict(workers or {}))


def test_fair_share_is_the_ceiling_over_live_turokd():
    assert [fair_share(4, n) for n in (1, 2, 3, 4, 5)] == [4, 2, 2, 1, 1]
    assert fair_share(4, 0) == 4


def test_live_workers_count_unexpired_workers_owners_and_me():
    table = view([Lease(0, "a", 100.0, 1), Lease(1, "gone", 50.0, 1), Lease(2, "", 0.0, 3)],
                 {"b": 100.0, "old": 10.0})
    assert live_workers(table, "me", 60.0) == {"a", "b", "me"}


def test_a_lone_turokd_takes_every_free_or_expired_partition():
    table = view([Lease(1, "dead", 50.0, 7), Lease(2, "", 0.0, 2)])
    plan = plan_leases(table, "me", {}, 4, now=60.0)
    assert plan.share == 4 and sorted(p for p, _ in plan.take) == [0, 1, 2, 3]
    seen = dict(plan.take)
    assert seen[0] is None and seen[1].counter == 7  # taken as seen: a race is lost, not doubled
    assert not plan.renew and not plan.release and not plan.lost


def test_a_live_lease_of_another_turokd_is_not_taken():
    table = view([Lease(0, "a", 100.0, 1), Lease(1, "a", 100.0, 1)], {"a": 100.0})
    plan = plan_leases(table, "me", {}, 4, now=60.0)
    assert plan.share == 2 and sorted(p for p, _ in plan.take) == [2, 3]


def test_a_turokd_over_its_share_gives_back_the_excess_when_another_joins():
    mine = {p: Lease(p, "a", 100.0, 5) for p in range(4)}
    table = view(mine.values(), {"a": 100.0, "new": 100.0})
    plan = plan_leases(table, "a", mine, 4, now=60.0)
    assert plan.share == 2 and plan.release == [2, 3] and [lease.partition for lease in plan.renew] == [0, 1]
    assert not plan.take and not plan.lost
    # the newcomer takes nothing while they are held, and what is given back once free
    assert plan_leases(table, "new", {}, 4, now=60.0).take == []
    freed = view([mine[0], mine[1], Lease(2, "", 0.0, 6), Lease(3, "", 0.0, 6)], {"a": 100.0, "new": 100.0})
    assert sorted(p for p, _ in plan_leases(freed, "new", {}, 4, now=60.0).take) == [2, 3]


def test_three_turokd_on_four_partitions_settle_at_two_one_one():
    leases = [Lease(0, "a", 100.0, 1), Lease(1, "a", 100.0, 1), Lease(2, "b", 100.0, 1), Lease(3, "c", 100.0, 1)]
    table = view(leases, {"a": 100.0, "b": 100.0, "c": 100.0})
    for me in "abc":
        held = {lease.partition: lease for lease in leases if lease.owner == me}
        plan = plan_leases(table, me, held, 4, now=60.0)
        assert plan.share == 2 and not plan.release and not plan.take and not plan.lost


def test_a_lease_with_another_owner_or_counter_is_lost():
    held = {0: Lease(0, "me", 100.0, 3), 1: Lease(1, "me", 100.0, 3), 2: Lease(2, "me", 100.0, 3)}
    table = view([Lease(0, "other", 200.0, 4), Lease(1, "me", 100.0, 3)])  # 0 taken, 2 gone
    plan = plan_leases(table, "me", held, 4, now=60.0)
    assert plan.lost == [0, 2] and [lease.partition for lease in plan.renew] == [1]
    assert [p for p, _ in plan.take] == [3]  # not 0 (held by other) nor 2 (just lost: next round)


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_heartbeats_take_renew_and_move_a_dead_turokds_partitions():
    table, clock = MemoryLeaseTable(), FakeClock()
    a = PartitionLeases(table, 4, duration=20.0, margin=5.0, worker="a", clock=clock)
    b = PartitionLeases(table, 4, duration=20.0, margin=5.0, worker="b", clock=clock)
    assert sorted(a.heartbeat().gained) == [0, 1, 2, 3]
    assert a.may_write(0) and a.owned_since(_metric_in(2)) == 1000.0
    clock.now += 5
    changes = b.heartbeat()  # b is alive now; a holds everything, live and renewed
    assert changes.gained == [] and b.held == []
    changes = a.heartbeat()  # a sees b: gives back two, keeps renewing them until written
    assert len(changes.release) == 2 and a.held == [0, 1, 2, 3]
    for partition in changes.release:
        assert a.release(partition)
    assert not a.may_write(changes.release[0]) and a.owned_since(_metric_in(changes.release[0])) is None
    clock.now += 1
    assert sorted(b.heartbeat().gained) == sorted(changes.release)
    assert not any(b.took_over(p) for p in changes.release)  # handed back: nothing left pending in a
    assert not any(a.took_over(p) for p in range(4))  # never owned before: nothing to inherit
    # a dies: b takes its partitions once their leases expire, not before
    clock.now += 10
    assert b.heartbeat().gained == []
    clock.now += 15
    gained = b.heartbeat().gained
    assert len(gained) == 2 and b.held == [0, 1, 2, 3]
    assert all(b.took_over(p) for p in gained)  # taken from a turokd that died with them


def test_a_turokd_paused_past_its_lease_cannot_write_and_learns_the_loss():
    table, clock = MemoryLeaseTable(), FakeClock()
    a = PartitionLeases(table, 2, duration=20.0, margin=5.0, worker="a", clock=clock)
    b = PartitionLeases(table, 2, duration=20.0, margin=5.0, worker="b", clock=clock)
    a.heartbeat()
    clock.now += 14.9
    assert a.may_write(0)
    clock.now += 0.2  # inside the margin before expiry: no write can be proved safe
    assert not a.may_write(0) and not a.may_write(1)
    clock.now += 10  # expired: b takes both
    assert sorted(b.heartbeat().gained) == [0, 1]
    changes = a.heartbeat()  # a resumes
    assert sorted(changes.lost) == [0, 1] and a.held == [] and not a.may_write(0)
    assert changes.gained == []  # b's leases are live


def _metric_in(partition, partitions=4):
    return next(f"m{i}" for i in range(1000) if partition_of(f"m{i}", partitions) == partition)


def test_when_another_turokd_holds_nothing_the_richest_gives_one_back_and_only_it():
    leases = [Lease(0, "a", 100.0, 1), Lease(1, "a", 100.0, 1), Lease(2, "b", 100.0, 1), Lease(3, "b", 100.0, 1)]
    table = view(leases, {"a": 100.0, "b": 100.0, "c": 100.0})
    plans = {me: plan_leases(table, me, {lease.partition: lease for lease in leases if lease.owner == me}, 4, 60.0)
             for me in "ab"}
    assert plans["b"].release == [3] and plans["a"].release == []  # a tie: the highest id gives
    freed = view(leases[:3] + [Lease(3, "", 0.0, 2)], {"a": 100.0, "b": 100.0, "c": 100.0})
    # the free lease goes to c, below the floor, not back to a or b
    assert plan_leases(freed, "a", {0: leases[0], 1: leases[1]}, 4, 60.0).take == []
    assert plan_leases(freed, "b", {2: leases[2]}, 4, 60.0).take == []
    assert [p for p, _ in plan_leases(freed, "c", {}, 4, 60.0).take] == [3]


def test_turokd_joining_and_dying_converge_to_fair_shares_on_a_fake_clock():
    table, clock = MemoryLeaseTable(), FakeClock()
    holders = {}

    def join(name):
        holders[name] = PartitionLeases(table, 4, duration=6.0, margin=2.0, worker=name, clock=clock)

    def rounds(count=6):
        for _ in range(count):
            clock.now += 1
            for holder in holders.values():
                for partition in holder.heartbeat().release:  # the service writes, then releases
                    holder.release(partition)
        return sorted(len(holder.held) for holder in holders.values())

    join("a")
    assert rounds() == [4]
    join("b")
    join("c")
    assert rounds() == [1, 1, 2]
    del holders["b"]  # dies: its lease expires
    assert rounds(10) == [2, 2]
    join("d")
    assert rounds() == [1, 1, 2]
    assert sorted(p for holder in holders.values() for p in holder.held) == [0, 1, 2, 3]


class FlakyTable(MemoryLeaseTable):
    """Fails chosen calls; ``applied`` ones fail after the change was made (a lost answer)."""

    def __init__(self):
        super().__init__()
        self.fail: list[tuple[str, bool]] = []  # (method, applied) for the next calls of that method

    def _maybe_fail(self, name, call):
        if self.fail and self.fail[0][0] == name:
            _name, applied = self.fail.pop(0)
            if applied:
                call()
            raise RuntimeError(f"{name} failed")
        return call()

    def renew(self, lease, expires):
        return self._maybe_fail("renew", lambda: super(FlakyTable, self).renew(lease, expires))

    def take(self, partition, owner, expires, seen):
        return self._maybe_fail("take", lambda: super(FlakyTable, self).take(partition, owner, expires, seen))

    def read(self):
        return self._maybe_fail("read", lambda: super(FlakyTable, self).read())


def test_lost_answers_and_failing_calls_neither_lose_a_lease_nor_extend_it_unproved():
    table, clock = FlakyTable(), FakeClock()
    a = PartitionLeases(table, 1, duration=20.0, margin=5.0, worker="a", clock=clock, sleep=lambda s: None)
    table.fail = [("take", True)] * 4  # taken, but every answer lost
    assert a.heartbeat().gained == [] and a.held == []
    clock.now += 1
    assert a.heartbeat().gained == [0]  # the table shows it as a's own: a takes it again, as seen
    clock.now += 5
    table.fail = [("renew", True)] * 4  # renewed four times, every answer lost
    changes = a.heartbeat()
    assert changes.lost == [] and a.held == [0]
    clock.now += 10  # 16 s after the last proved renewal: no write may be proved safe
    assert not a.may_write(0)
    table.fail = [("read", False)] * 4  # the table unreadable: what is held is still renewed
    a.heartbeat()
    assert a.held == [0]  # the renew failed its condition (stale counter): kept, not extended
    assert not a.may_write(0)
    a.heartbeat()  # read again: the table's counter is adopted, and the renewal proves the lease
    assert a.held == [0] and a.may_write(0)


def test_records_since_is_the_lease_or_the_end_of_the_last_import_and_none_while_one_runs():
    table, clock = MemoryLeaseTable(), FakeClock()
    a = PartitionLeases(table, 2, duration=20.0, margin=5.0, worker="a", clock=clock)
    metric = _metric_in(1)
    assert a.records_since(metric) is None  # nothing held yet
    a.heartbeat()
    assert a.records_since(metric) == 1000.0  # the lease's start
    table.announce_import("import-x", clock.now + 60, before=clock.now + 1)
    clock.now += 5
    a.heartbeat()
    assert a.records_since(metric) is None  # an import writes what it likes while it runs
    clock.now += 5
    a.heartbeat()
    assert a.records_since(metric) is None
    table.end_import("import-x")
    clock.now += 5
    a.heartbeat()
    # its writes all came before its item went: a record read from now on names them
    assert a.records_since(metric) == clock.now
    clock.now += 5
    a.heartbeat()
    assert a.records_since(metric) == clock.now - 5
