"""The import's mark in the lease table (``importer/guard.py``): waits for live turokd only, is
renewed while the import runs, stops the import when it cannot be, and is removed at the end."""
import pytest

from turok_core.importer.guard import ImportGuard, ImportGuardError
from turok_core.storage.memory_leases import MemoryLeaseTable


def test_without_a_live_turokd_the_import_starts_at_once_and_ends_its_mark():
    table, now, slept = MemoryLeaseTable(), [1000.0], []
    table.announce("dead", 990.0)
    guard = ImportGuard(table, 1001, 20, 25, 5, 60, clock=lambda: now[0], sleep=slept.append, name="x")
    with guard:
        assert table.read().imports == {"x": (1060.0, 1001.0)}
    assert slept == [] and table.read().imports == {}


def test_the_import_waits_for_each_live_turokd_to_read_the_table_then_settles():
    table, now, slept = MemoryLeaseTable(), [1000.0], []
    table.announce("a", 1015.0)

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds
        if now[0] >= 1002:
            table.announce("a", now[0] + 20)  # a's heartbeat: it reads the table right after

    with ImportGuard(table, 1001, 20, 25, 5, 60, clock=lambda: now[0], sleep=sleep, name="x"):
        pass
    assert slept[:4] == [0.5] * 4 and slept[-1] == 5 and len(slept) == 5


def test_a_turokd_that_stops_heartbeating_is_waited_for_until_it_expires():
    table, now = MemoryLeaseTable(), [1000.0]
    table.announce("stuck", 1015.0)

    def sleep(seconds):
        now[0] += seconds

    with ImportGuard(table, 1001, 20, 25, 5, 60, clock=lambda: now[0], sleep=sleep):
        assert now[0] == pytest.approx(1020.0)  # expired at 1015, then settled


def test_a_mark_not_renewed_stops_the_import():
    table, now = MemoryLeaseTable(), [1000.0]
    guard = ImportGuard(table, 1001, 20, 25, 5, 60, clock=lambda: now[0], sleep=lambda s: None)
    with guard:
        guard.check()
        now[0] += 31  # the renewals failed for half the mark's life
        with pytest.raises(ImportGuardError):
            guard.check()
