"""The write-ahead spool: framing, damaged segments, replay order, delivery tracking, bounds."""
from __future__ import annotations

import os

import msgpack
import pytest

from turok_core.spool.bodies import BodySpool
from turok_core.spool.journal import PointJournal
from turok_core.spool.segments import BASE, BODY, HEADER, POINTS, ScanStats, SegmentLog, SpoolError, frame, scan

STEP = 10


def deadline(metric: str, ts: int):
    """Every metric 10 s, except ``none.*`` which no schema matches."""
    return None if metric.startswith("none.") else ts - ts % STEP + STEP


def records(data: bytes, stats: ScanStats | None = None):
    return [(kind, payload) for _offset, kind, payload in scan(data, stats or ScanStats())]


# --- framing and damage ---------------------------------------------------------------------

def test_frames_round_trip_in_order():
    data = frame(BODY, b"one") + frame(POINTS, b"") + frame(BODY, b"x" * 70000)
    stats = ScanStats()
    assert records(data, stats) == [(BODY, b"one"), (POINTS, b""), (BODY, b"x" * 70000)]
    assert (stats.records, stats.damaged, stats.skipped_bytes) == (3, 0, 0)


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 2])
def test_a_torn_tail_is_skipped_and_counted(cut):
    whole = frame(BODY, b"first") + frame(BODY, b"second")
    torn = whole[:len(frame(BODY, b"first")) + cut]
    stats = ScanStats()
    assert records(torn, stats) == [(BODY, b"first")]
    assert (stats.damaged, stats.skipped_bytes) == (1, cut)


def test_damage_in_the_middle_skips_to_the_next_intact_record():
    first, second, third = frame(BODY, b"a" * 50), frame(BODY, b"b" * 50), frame(BODY, b"c" * 50)
    data = bytearray(first + second + third)
    data[len(first) + HEADER.size + 10] ^= 0xFF  # a flipped bit in the second payload
    stats = ScanStats()
    assert records(bytes(data), stats) == [(BODY, b"a" * 50), (BODY, b"c" * 50)]
    assert (stats.damaged, stats.skipped_bytes) == (1, len(second))
    # a length field pointing past the end, and garbage between records
    bad_length = bytearray(first)
    bad_length[4:8] = (10 ** 9).to_bytes(4, "big")
    assert records(bytes(bad_length) + b"\x00garbage\xa7" + third) == [(BODY, b"c" * 50)]


def test_damaged_segments_never_stop_start_up(tmp_path):
    spool = BodySpool(tmp_path)
    spool.recover()
    spool.add(["one", "two", "three"])
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])  # the crash cut the last record
    again = BodySpool(tmp_path)
    stats = again.recover()
    assert (stats.records, stats.damaged) == (2, 1)
    assert again.load(again.head(10, 1 << 20)) == ["one", "two"]
    again.close()


def test_one_process_per_directory(tmp_path):
    log = SegmentLog(tmp_path)
    log.open()
    with pytest.raises(SpoolError, match="in use by another process"):
        SegmentLog(tmp_path).open()
    log.close()
    SegmentLog(tmp_path).open()
    with pytest.raises(SpoolError, match="spool_fsync"):
        SegmentLog(tmp_path, fsync="sometimes")


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_keeps_what_was_appended(tmp_path, policy):
    log = SegmentLog(tmp_path, fsync=policy)
    log.open()
    number, offsets = log.append([(BODY, b"a"), (BODY, b"bb")])
    log.sync()
    assert [log.read_at(number, offset) for offset in offsets] == [b"a", b"bb"]
    log.close()


# --- bodies -------------------------------------------------------------------------------

def test_bodies_replay_unacknowledged_in_order_and_segments_go_when_acknowledged(tmp_path):
    spool = BodySpool(tmp_path, segment_bytes=100)
    spool.recover()
    names = [f"body-{i:02d}-" + "x" * 40 for i in range(10)]
    for name in names:
        spool.add([name])  # ~60 bytes each: a new segment every two bodies
    assert spool.pending_count == 10 and len(spool.log.sizes) == 5
    head = spool.head(3, 1 << 20)
    assert spool.load(head) == names[:3]
    spool.ack([body.key for body in head[:2]])
    assert len(spool.log.sizes) == 4  # the first segment is all acknowledged: gone
    spool.ack([head[2].key])
    spool.log.close()  # a crash: no orderly close
    again = BodySpool(tmp_path, segment_bytes=100)
    again.recover()
    assert again.load(again.head(100, 1 << 20)) == names[3:]
    assert again.pending_bytes == sum(len(n) for n in names[3:])
    again.ack([body.key for body in again.head(100, 1 << 20)])
    assert again.pending_count == 0
    assert again.total_bytes == 0 and list(tmp_path.glob("*.seg")) == []
    again.close()


def test_an_acknowledgement_outlives_nothing_it_refers_to(tmp_path):
    # ACKs of a later segment refer to bodies of an earlier one still pending: keep both
    spool = BodySpool(tmp_path, segment_bytes=10)
    spool.recover()
    spool.add(["a" * 20, "b" * 20])
    first, second = spool.head(2, 1 << 20)
    spool.add(["c" * 20])  # a new segment (the first is over 10 bytes)
    spool.ack([second.key])  # written into the newest segment
    spool.add(["d" * 20])
    spool.log.close()
    again = BodySpool(tmp_path, segment_bytes=10)
    again.recover()
    assert again.load(again.head(10, 1 << 20)) == ["a" * 20, "c" * 20, "d" * 20]
    again.close()


def test_memory_holds_at_most_cache_bytes_of_bodies(tmp_path):
    spool = BodySpool(tmp_path, cache_bytes=100)
    spool.recover()
    spool.add(["x" * 60, "y" * 60, "z" * 30])
    in_memory = [body.body is not None for body in spool.head(10, 1 << 20)]
    assert in_memory == [True, False, True]
    assert spool.load(spool.head(10, 1 << 20)) == ["x" * 60, "y" * 60, "z" * 30]  # read back from disk
    head = spool.head(2, 100)
    assert len(head) == 1  # the byte limit applies beyond the first body
    spool.close()


# --- the point journal --------------------------------------------------------------------

def reopen(directory, now=1000.0, max_step=STEP):
    journal = PointJournal(directory, max_step)
    return journal, journal.recover(deadline, now)


def test_points_not_released_are_replayed_and_released_ones_are_not(tmp_path):
    journal, recovered = reopen(tmp_path)
    assert recovered.names == []
    journal.add(["a", "b", "none.x"], [1.0, 2.0, 3.0], [95, 105, 95])
    rid = journal.begin_release(100, 101)  # windows with slot + step <= 100: a's
    journal.add(["late"], [4.0], [91])  # arrives after the release took its window's slot
    journal.end_release(rid)
    journal.add(["c"], [5.0], [97])
    open_rid = journal.begin_release(100, 102)  # never done: its bodies did not reach the spool
    journal.log.close()
    journal, recovered = reopen(tmp_path)
    assert list(zip(recovered.names, recovered.values, recovered.timestamps)) == [
        ("b", 2.0, 105), ("late", 4.0, 91), ("c", 5.0, 97)]
    assert recovered.delivered == 2  # a, and none.x which no schema takes
    assert open_rid
    journal.log.close()
    # recovery rewrote the journal: the same points come back once, not twice
    journal, recovered = reopen(tmp_path)
    assert recovered.names == ["b", "late", "c"]
    journal.close()


def test_delivered_segments_are_deleted_and_a_restart_replays_nothing(tmp_path):
    journal, _ = reopen(tmp_path, now=0)
    journal.rotate_seconds = 0  # every release starts a segment
    journal.add(["a"], [1.0], [95])
    rid = journal.begin_release(90, 100)
    journal.end_release(rid)
    assert len(journal.log.sizes) == 2  # a's window (deadline 100) is not released yet
    journal.add(["b"], [2.0], [103])
    rid = journal.begin_release(105, 110)  # a's stamp + the longest step: surely delivered
    assert journal.end_release(rid) == [1]  # b's segment is the current one
    journal.add(["c"], [3.0], [111])
    rid = journal.begin_release(120, 125)
    journal.end_release(rid)
    assert list(journal.log.sizes) == [3, 4]  # c's stamp + the longest step is past 120
    journal.log.close()
    journal, recovered = reopen(tmp_path)
    assert recovered.names == [] and recovered.delivered == 1  # c's window was released exactly
    journal.close()


def test_a_rewrite_interrupted_before_its_deletes_counts_no_point_twice(tmp_path):
    log = SegmentLog(tmp_path)
    log.open()
    log.append([(POINTS, msgpack.packb([["old"], [1.0], [5]]))])
    log.rotate()
    log.append([(POINTS, msgpack.packb([["old2"], [2.0], [6]]))])
    log.rotate()
    # what replace() leaves if the process dies right after its rename
    (tmp_path / f"{2:016d}.seg").write_bytes(frame(BASE, msgpack.packb(1))
                                             + frame(POINTS, msgpack.packb([["new"], [3.0], [7]])))
    log.close()
    journal, recovered = reopen(tmp_path)
    assert recovered.names == ["new"]
    assert journal.log.superseded_deleted == 1
    journal.close()


def test_compaction_rewrites_old_segments_kept_by_far_future_points(tmp_path):
    journal, _ = reopen(tmp_path, now=1000)
    journal.rotate_seconds = 0
    journal.add(["soon", "far"], [1.0, 2.0], [995, 5000])
    for now in (1010, 1020):
        rid = journal.begin_release(now - 2, now)
        journal.end_release(rid)
    assert 1 in journal.log.sizes  # the far point pins its segment
    assert journal.compact(1100, 60, deadline) == 1  # only "far" is carried over
    rid = journal.begin_release(1098, 1100)
    journal.end_release(rid)
    journal.log.close()
    journal, recovered = reopen(tmp_path, now=1100)
    assert recovered.names == ["far"] and recovered.delivered == 0
    journal.close()


def test_clear_empties_an_idle_journal(tmp_path):
    journal, _ = reopen(tmp_path)
    journal.add(["a"], [1.0], [95])
    rid = journal.begin_release(100, 101)
    with pytest.raises(ValueError):
        journal.clear()
    journal.end_release(rid)
    journal.clear()
    assert journal.total_bytes == 0 and list(tmp_path.glob("*.seg")) == []
    journal.add(["b"], [1.0], [105])
    journal.log.close()
    assert reopen(tmp_path)[1].names == ["b"]


def test_segment_files_hold_exactly_the_framed_records(tmp_path):
    log = SegmentLog(tmp_path)
    log.open()
    log.append([(BODY, b"abc")])
    log.close()
    (segment,) = tmp_path.glob("*.seg")
    assert segment.read_bytes() == frame(BODY, b"abc")
    assert os.path.exists(tmp_path / "lock")


# --- partitions -----------------------------------------------------------------------------

def test_bodies_keep_their_partition_across_a_restart_and_old_records_are_partition_zero(tmp_path):
    spool = BodySpool(tmp_path, cache_bytes=0)  # nothing cached: every body read back from disk
    spool.recover()
    spool.add(["old"])  # a spool of one partition: plain BODY records, as before partitions
    spool.add(["a", "b", "c"], [2, 0, 1])
    spool.close()
    again = BodySpool(tmp_path, cache_bytes=0)
    again.recover()
    pending = again.head(10, 1 << 20)
    assert [(again.load([b])[0], b.partition) for b in pending] == [("old", 0), ("a", 2), ("b", 0), ("c", 1)]
    assert again.pending_bytes == 6


def test_a_drain_round_sends_each_body_to_its_partitions_queue_in_order(tmp_path):
    from turok_core.model.message import TurokMessage
    from turok_core.spool.drain import encode_bodies, send_round
    from turok_core.wire.codec import decode_body
    from turok_core.wire.memory_queue import MemoryQueue
    from turok_core.wire.partitions import partition_of

    messages = [TurokMessage(f"m{i}", 600, [float(i)], 10, "sum") for i in range(40)]
    encoded = encode_bodies(messages, 262144, 1, partitions=3)
    assert sorted(set(encoded.partitions)) == [0, 1, 2] and len(encoded.bodies) == 3
    spool = BodySpool(tmp_path)
    spool.recover()
    spool.add(encoded.bodies, encoded.partitions)
    queues = [MemoryQueue() for _ in range(3)]
    result = send_round(queues, spool, spool.head(100, 1 << 20), [], 262144)
    assert result.error is None and len(result.sent) == 3
    for partition, queue in enumerate(queues):
        received = [m for r in queue.receive(10, 0) for m in decode_body(r.body)]
        assert received and all(partition_of(m.metric, 3) == partition for m in received)
    # the memory overflow too, and a failing queue stops the round after what went before it
    queues[1].send = lambda bodies: (_ for _ in ()).throw(RuntimeError("down"))
    result = send_round(queues, spool, [], ["x", "y", "z"], 262144, memory_partitions=[0, 1, 2])
    assert result.sent_memory == 1 and isinstance(result.error, RuntimeError)
