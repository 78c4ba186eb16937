"""The lease table contract: every test runs against ``MemoryLeaseTable`` and the boto3 ``LeaseTable``
on moto and on dynalite.

What turokd relies on: a partition is taken only as it was seen (of two racing takers one wins),
renewed and released only by its owner at the counter it holds, every change bumps the counter,
and worker items say who is alive.
"""
from __future__ import annotations

import pytest

from tests.conftest import DYNAMODB_SERVERS, make_dynamodb_config
from turok_core.runtime.aws import make_client
from turok_core.storage.leases import Lease, LeaseTable
from turok_core.storage.memory_leases import MemoryLeaseTable


@pytest.fixture(params=["memory", *DYNAMODB_SERVERS])
def table(request):
    """The in-memory table, then the boto3 one on moto and on dynalite (whose request validation
    is DynamoDB's: reserved words, expression syntax, key types)."""
    if request.param == "memory":
        return MemoryLeaseTable()
    config = make_dynamodb_config(request, request.param)
    lease_table = LeaseTable(make_client("dynamodb", config), config.lease_table_name)
    lease_table.ensure_table()  # as turok-provision does
    return lease_table


def test_a_free_partition_is_taken_once_and_the_loser_of_a_race_learns_it(table):
    assert table.read().leases == {}
    first = table.take(3, "a", 120.0, None)
    assert first == Lease(3, "a", 120.0, 1)
    assert table.take(3, "b", 130.0, None) is None  # b saw no item, but a made one first
    assert table.read().leases == {3: first}


def test_an_expired_lease_is_taken_as_seen_and_its_old_owner_cannot_renew_or_release(table):
    old = table.take(0, "a", 100.0, None)
    seen = table.read().leases[0]
    assert seen.free_at(100.0) and not seen.free_at(99.9)
    taken = table.take(0, "b", 200.0, seen)
    assert taken == Lease(0, "b", 200.0, 2)
    assert table.take(0, "c", 210.0, seen) is None  # c raced with the same view: too late
    assert table.renew(old, 300.0) is None and table.release(old) is False
    assert table.read().leases[0] == taken


def test_renew_and_release_bump_the_counter_and_need_the_counter_held(table):
    lease = table.take(1, "a", 50.0, None)
    renewed = table.renew(lease, 80.0)
    assert renewed == Lease(1, "a", 80.0, 2)
    assert table.renew(lease, 90.0) is None  # a stale counter: the holder cannot prove it holds it
    assert table.release(renewed) is True
    free = table.read().leases[1]
    assert free.owner == "" and free.counter == 3 and free.free_at(0.0)
    assert table.take(1, "b", 100.0, free) == Lease(1, "b", 100.0, 4)


def test_workers_announce_and_retire(table):
    table.announce("w1", 10.0)
    table.announce("w2", 20.0)
    table.announce("w1", 30.0)
    assert table.read().workers == {"w1": 30.0, "w2": 20.0}
    table.retire("w2")
    table.take(0, "w1", 30.0, None)
    view = table.read()
    assert view.workers == {"w1": 30.0} and list(view.leases) == [0]


def test_an_import_is_announced_with_its_bound_and_ended(table):
    table.announce_import("imp1", 1000.0, 555.0)
    table.announce_import("imp1", 1020.0, 555.0)  # renewed
    table.take(0, "a", 100.0, None)
    view = table.read()
    assert view.imports == {"imp1": (1020.0, 555.0)} and list(view.leases) == [0] and view.workers == {}
    table.end_import("imp1")
    assert table.read().imports == {}
