"""WindowBuffer: alignment, release after slot + step + grace, policies, late data."""
from __future__ import annotations

from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.windows.buffer import WindowBuffer

T0 = 1_700_000_000  # divisible by 10 and by 20, not by 60


def table_policy(metric: str) -> tuple[int, str]:
    if metric.startswith("slow."):
        return 60, "average"
    if metric.endswith(".count"):
        return 10, "sum"
    return 10, "average"


def test_points_align_to_slot_floor_and_keep_arrival_order():
    buffer = WindowBuffer(table_policy, grace_seconds=5)
    added = buffer.add_points(["a", "a", "a", "b"], [3.0, 1.0, 2.0, 7.0], [T0 + 9, T0, T0 + 5, T0 + 10])
    assert added == 4
    assert (buffer.open_windows, buffer.buffered_points) == (2, 4)
    messages = buffer.release(T0 + 100)
    assert messages == [TurokMessage("a", T0, [3.0, 1.0, 2.0], 10, "average"),
                        TurokMessage("b", T0 + 10, [7.0], 10, "average")]
    assert (buffer.open_windows, buffer.buffered_points) == (0, 0)
    assert buffer.release(T0 + 200) == []


def test_alignment_is_floor_of_ts_over_step():
    buffer = WindowBuffer(lambda m: (60, "last"), grace_seconds=0)
    timestamps = [T0 - 1, T0, T0 + 59, T0 + 61]
    buffer.add_points(["m"] * 4, [1.0, 2.0, 3.0, 4.0], timestamps)
    starts = sorted(m.start_time for m in buffer.release_all())
    assert starts == sorted({(ts // 60) * 60 for ts in timestamps})
    assert all(start % 60 == 0 for start in starts)


def test_release_only_after_slot_plus_step_plus_grace():
    buffer = WindowBuffer(table_policy, grace_seconds=5)
    buffer.add_points(["a"], [1.0], [T0 + 3])
    assert buffer.release(T0 + 14.99) == []
    assert buffer.open_windows == 1
    assert buffer.release(T0 + 15) == [TurokMessage("a", T0, [1.0], 10, "average")]
    assert buffer.open_windows == 0


def test_step_and_aggregation_come_from_the_policy_lookup_cached_per_name():
    calls = []

    def lookup(metric):
        calls.append(metric)
        return table_policy(metric)

    buffer = WindowBuffer(lookup, grace_seconds=0)
    for _ in range(3):
        buffer.add_points(["req.count", "slow.x", "cpu"], [1.0, 2.0, 3.0], [T0 + 1, T0 + 1, T0 + 1])
    assert sorted(calls) == ["cpu", "req.count", "slow.x"]
    messages = {m.metric: m for m in buffer.release_all()}
    assert messages["req.count"] == TurokMessage("req.count", T0, [1.0] * 3, 10, "sum")
    assert messages["cpu"] == TurokMessage("cpu", T0, [3.0] * 3, 10, "average")
    assert messages["slow.x"] == TurokMessage("slow.x", T0 - T0 % 60, [2.0] * 3, 60, "average")


def test_several_resolutions_release_independently():
    buffer = WindowBuffer(table_policy, grace_seconds=2)
    slot60 = T0 - T0 % 60
    buffer.add_points(["fast", "slow.y"], [1.0, 2.0], [slot60 + 1, slot60 + 1])
    first = buffer.release(slot60 + 12)
    assert first == [TurokMessage("fast", slot60, [1.0], 10, "average")]
    assert buffer.open_windows == 1
    assert buffer.release(slot60 + 61) == []
    assert buffer.release(slot60 + 62) == [TurokMessage("slow.y", slot60, [2.0], 60, "average")]


def test_default_schemas_as_the_gateway_uses_them():
    schemas = load_schemas(TurokConfig())

    def lookup(metric):
        policy = schemas.policy_for(metric)
        return policy.step, policy.aggregation_type

    buffer = WindowBuffer(lookup, grace_seconds=10)
    buffer.add_points(["web.hits.count", "web.latency", "carbon.agents.x.cpu"], [1.0, 2.0, 3.0],
                      [T0 + 1, T0 + 1, T0 + 1])
    got = {m.metric: (m.resolution, m.aggregation_type) for m in buffer.release_all()}
    assert got == {"web.hits.count": (10, "sum"), "web.latency": (10, "average"),
                   "carbon.agents.x.cpu": (60, "average")}


def test_release_all_empties_open_windows():
    buffer = WindowBuffer(table_policy, grace_seconds=1000)
    buffer.add_points(["a", "b", "a"], [1.0, 2.0, 3.0], [T0, T0, T0 + 20])
    assert buffer.release(T0 + 25) == []
    messages = buffer.release_all()
    assert messages == [TurokMessage("a", T0, [1.0], 10, "average"),
                        TurokMessage("b", T0, [2.0], 10, "average"),
                        TurokMessage("a", T0 + 20, [3.0], 10, "average")]
    assert (buffer.open_windows, buffer.buffered_points) == (0, 0)
    assert buffer.release_all() == []


def test_late_point_for_released_slot_is_released_again_next_time():
    buffer = WindowBuffer(table_policy, grace_seconds=5)
    buffer.add_points(["a"], [1.0], [T0])
    assert buffer.release(T0 + 15) == [TurokMessage("a", T0, [1.0], 10, "average")]
    buffer.add_points(["a"], [2.0], [T0 + 4])  # late: its window is gone
    assert buffer.open_windows == 1
    assert buffer.release(T0 + 16) == [TurokMessage("a", T0, [2.0], 10, "average")]


def test_metric_without_policy_is_rejected_and_counted():
    def lookup(metric):
        if metric.startswith("x"):
            raise ValueError("no schema")
        return 10, "average"

    buffer = WindowBuffer(lookup, grace_seconds=0)
    assert buffer.add_points(["x1", "ok", "x1"], [1.0, 2.0, 3.0], [T0, T0, T0]) == 1
    assert buffer.rejected_points == 2
    assert buffer.release_all() == [TurokMessage("ok", T0, [2.0], 10, "average")]


def test_policy_cache_is_bounded():
    calls = []

    def lookup(metric):
        calls.append(metric)
        return 10, "average"

    buffer = WindowBuffer(lookup, grace_seconds=0, policy_cache_size=10)
    names = [f"m{i}" for i in range(25)]
    buffer.add_points(names, [1.0] * 25, [T0] * 25)
    assert len(buffer._policies) <= 10
    assert len(buffer.release_all()) == 25


def test_a_chunk_of_one_timestamp_and_policy_takes_the_bulk_path_with_the_same_result():
    names = [f"h{i}.cpu" for i in range(1000)]
    buffer = WindowBuffer(table_policy, grace_seconds=0)
    # policies unknown yet: point by point (and they get cached)
    assert buffer.add_points(names, [float(i) for i in range(1000)], [T0] * 1000) == 1000
    # policies cached, one stamp, names new to the window: one dict update
    assert buffer.add_points(names, [float(-i) for i in range(1000)], [T0 + 20] * 1000) == 1000
    assert (buffer.open_windows, buffer.buffered_points) == (2000, 2000)
    released = buffer.release(T0 + 100)
    assert len(released) == 2000 and released.points == 2000
    assert list(released) == ([TurokMessage(n, T0, [float(i)], 10, "average") for i, n in enumerate(names)]
                              + [TurokMessage(n, T0 + 20, [float(-i)], 10, "average") for i, n in enumerate(names)])
    assert (buffer.open_windows, buffer.buffered_points) == (0, 0)


def test_names_repeated_in_a_chunk_or_already_open_join_their_window_in_order():
    buffer = WindowBuffer(table_policy, grace_seconds=0)
    buffer.add_points(["a", "b"], [1.0, 2.0], [T0, T0])
    buffer.add_points(["a", "c", "a"], [3.0, 4.0, 5.0], [T0 + 1] * 3)  # "a" repeats in the chunk
    buffer.add_points(["b", "d"], [6.0, 7.0], [T0 + 2] * 2)  # "b" is already open
    buffer.add_points(["e", "f"], [8.0, 0.5], [T0 - 10] * 2)  # (caches the policies of e and f)
    buffer.add_points(["e", "f", "e"], [9.0, 1.5, 10.0], [T0] * 3)  # bulk update undone: all kept
    assert (buffer.open_windows, buffer.buffered_points) == (8, 12)
    released = buffer.release(T0 + 10)
    assert released.points == 12
    assert sorted(released, key=lambda m: (m.start_time, m.metric)) == [
        TurokMessage("e", T0 - 10, [8.0], 10, "average"), TurokMessage("f", T0 - 10, [0.5], 10, "average"),
        TurokMessage("a", T0, [1.0, 3.0, 5.0], 10, "average"), TurokMessage("b", T0, [2.0, 6.0], 10, "average"),
        TurokMessage("c", T0, [4.0], 10, "average"), TurokMessage("d", T0, [7.0], 10, "average"),
        TurokMessage("e", T0, [9.0, 10.0], 10, "average"), TurokMessage("f", T0, [1.5], 10, "average")]


def test_released_batch_is_a_sequence_of_messages_and_empty_when_nothing_closed():
    buffer = WindowBuffer(table_policy, grace_seconds=0)
    assert not buffer.release(T0) and len(buffer.release_all()) == 0
    buffer.add_points(["x.count", "slow.y"], [1.0, 2.0], [T0, T0])
    batch = buffer.release_all()
    assert bool(batch) and len(batch) == 2 and [g.step for g in batch.groups] == [60, 10]  # by slot
    assert list(batch) == [TurokMessage("slow.y", T0 - T0 % 60, [2.0], 60, "average"),
                           TurokMessage("x.count", T0, [1.0], 10, "sum")]
    assert batch[-1].metric == "x.count" and batch == list(batch)


def test_policies_of_looks_each_name_up_once_for_the_journal_and_the_windows():
    looked_up = []

    def policy(metric: str) -> tuple[int, str]:
        looked_up.append(metric)
        if metric.startswith("orphan."):
            raise ValueError("no schema")
        return table_policy(metric)

    buffer = WindowBuffer(policy, grace_seconds=5)
    names = ["a", "slow.b", "orphan.c", "a"]
    policies = buffer.policies_of(names)
    assert policies == [(10, "average", ()), (60, "average", ()), None, (10, "average", ())]
    assert buffer.add_points(names, [1.0, 2.0, 3.0, 4.0], [T0] * 4, policies) == 3
    assert buffer.rejected_points == 1
    assert buffer.policies_of(names) == policies and sorted(looked_up) == ["a", "orphan.c", "slow.b"]


def test_old_points_go_to_the_first_archive_covering_their_age_like_whisper():
    from turok_core.model.schemas import archive_for_age, parse_archive

    archives = tuple(parse_archive(a) for a in ("10s:1h", "1min:1d", "1h:7d"))
    now = 1_700_000_000
    buffer = WindowBuffer(lambda m: (10, "sum", archives), grace_seconds=0, clock=lambda: now)
    ages = [5, 3600, 3601, 86400, 86401, 7 * 86400, 7 * 86400 + 1]
    names = [f"m{i}" for i in range(len(ages))]
    assert buffer.add_points(names, [1.0] * len(ages), [now - age for age in ages]) == len(ages) - 1
    assert buffer.expired_points == 1
    steps = {message.metric: message.resolution for message in buffer.release_all()}
    assert steps == {"m0": 10, "m1": 10, "m2": 60, "m3": 60, "m4": 3600, "m5": 3600}
    assert [archive_for_age(archives, age) for age in (-5, 3600, 3601, 7 * 86400 + 1)] == \
        [archives[0], archives[0], archives[1], None]
    # several old points of one coarse slot: one window, aggregated with the metric's method
    start = now - 2 * 86400 - (now - 2 * 86400) % 3600
    buffer.add_points(["old"] * 3, [1.0, 2.0, 4.0], [start, start + 10, start + 3599])
    (message,) = buffer.release_all()
    assert (message.start_time, message.resolution, message.datapoints) == (start, 3600, [1.0, 2.0, 4.0])
    # the fast path (one timestamp, one policy) routes too; without a clock nothing is routed
    buffer.add_points(["a", "b"], [1.0, 2.0], [now - 2 * 86400] * 2)
    assert {m.resolution for m in buffer.release_all()} == {3600}
    plain = WindowBuffer(lambda m: (10, "sum", archives), grace_seconds=0)
    plain.add_points(["a"], [1.0], [now - 2 * 86400])
    assert [m.resolution for m in plain.release_all()] == [10]
