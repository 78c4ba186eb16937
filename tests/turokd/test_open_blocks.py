"""turokd's open blocks, in memory: when blocks close, which messages wait, what a failed write keeps."""
from __future__ import annotations

import calendar

from tests.support.open_blocks import add_slots, rows
from turok_core.turokd.open_blocks import OpenBlocks

DAY = calendar.timegm((2014, 4, 1, 0, 0, 0))
SPAN = 60  # 6 slots of 10 s


def make_blocks() -> OpenBlocks:
    return OpenBlocks(block_slots=6, close_delay=5)


def test_a_block_closes_after_its_end_plus_the_delay_and_its_messages_wait_for_it():
    blocks = make_blocks()
    held = add_slots(blocks, {("a", 10, DAY): 1.0, ("a", 10, DAY + 50): 2.0, ("b", 10, DAY + 60): 3.0},
                      [("r1", [(10, DAY), (10, DAY + 50)]), ("r2", [(10, DAY + 50), (10, DAY + 60)])])
    assert held == [(DAY + SPAN + 5, "r1"), (DAY + 2 * SPAN + 5, "r2")]
    assert blocks.open_blocks == 2 and blocks.held_messages == 2
    assert blocks.take_due(DAY + SPAN + 4).blocks == {}  # not yet: the last slot's message may be on its way
    due = blocks.take_due(DAY + SPAN + 5)
    assert rows(due) == [("a", 10, DAY, {0: 1.0, 5: 2.0})] and due.receipt_handles == ["r1"]
    blocks.written(due)
    assert blocks.open_blocks == 1
    due = blocks.take_due(DAY + 10 * SPAN)
    assert rows(due) == [("b", 10, DAY + 60, {0: 3.0})] and due.receipt_handles == ["r2"]


def test_a_later_message_replaces_the_slot_and_late_data_reopens_a_written_block():
    blocks = make_blocks()
    add_slots(blocks, {("a", 10, DAY + 10): 1.0}, [("r1", [(10, DAY + 10)])])
    add_slots(blocks, {("a", 10, DAY + 10): 7.0, ("a", 10, DAY + 20): 8.0}, [("r2", [(10, DAY + 10)])])
    due = blocks.take_due(DAY + 1000)
    assert rows(due) == [("a", 10, DAY, {1: 7.0, 2: 8.0})] and sorted(due.receipt_handles) == ["r1", "r2"]
    blocks.written(due)
    add_slots(blocks, {("a", 10, DAY + 30): 9.0}, [("r3", [(10, DAY + 30)])])  # late: its block closed long ago
    due = blocks.take_due(DAY + 1000)  # so it is due at once, to be merged into the stored item
    assert rows(due) == [("a", 10, DAY, {3: 9.0})] and due.receipt_handles == ["r3"]


def test_a_failed_write_reopens_the_blocks_newer_slots_win_and_receipts_wait_again():
    blocks = make_blocks()
    add_slots(blocks, {("a", 10, DAY): 1.0, ("a", 10, DAY + 10): 2.0}, [("r1", [(10, DAY)])])
    due = blocks.take_due(DAY + 1000)
    add_slots(blocks, {("a", 10, DAY + 10): 5.0}, [("r2", [(10, DAY + 10)])])  # arrived while writing
    assert blocks.points(["a"], DAY, DAY + SPAN) == {"a": {10: [[DAY, 1.0], [DAY + 10, 5.0]]}}
    blocks.restore(due)
    assert blocks.held_messages == 2
    again = blocks.take_due(DAY + 1000)
    assert rows(again) == [("a", 10, DAY, {0: 1.0, 1: 5.0})] and sorted(again.receipt_handles) == ["r1", "r2"]
    blocks.written(again)
    assert blocks.open_blocks == 0 and blocks.held_messages == 0


def test_points_answers_cache_queries_from_open_and_writing_blocks_only_inside_the_range():
    blocks = make_blocks()
    add_slots(blocks, {("a", 10, DAY): 1.0, ("a", 10, DAY + 70): 2.0, ("b", 60, DAY + 120): 3.0, ("c", 10, DAY): 4.0})
    blocks.take_due(DAY + SPAN + 5)  # a's and c's first blocks are being written: still answered
    assert blocks.points(["a", "b", "zz"], DAY, DAY + 3600) == {
        "a": {10: [[DAY, 1.0], [DAY + 70, 2.0]]}, "b": {60: [[DAY + 120, 3.0]]}}
    assert blocks.points(["a"], DAY + 10, DAY + 70) == {}


def test_late_data_for_a_written_block_is_merged_once_after_it_stops_coming_and_its_messages_wait():
    blocks = OpenBlocks(block_slots=6, close_delay=5, late_delay=10, late_max=100)
    add_slots(blocks, {("a", 10, DAY): 1.0}, [("r1", [(10, DAY)])], now=DAY + 1)
    blocks.written(blocks.take_due(DAY + SPAN + 5))
    # a stream of late slots, 4 s apart: each pushes the merge back, up to 100 s after the first
    for n in range(25):
        now = DAY + 200 + 4 * n
        held = add_slots(blocks, {("a", 10, DAY + 10 * (n % 6)): float(n)}, [(f"late{n}", [(10, DAY + 10 * (n % 6))])],
                          now=now)
        assert held == [(min(now + 10, DAY + 300), f"late{n}")]  # when its merge is due, for now
        due = blocks.take_due(now)
        assert due.blocks == {} and due.receipts == []
    due = blocks.take_due(DAY + 300)  # the cap: merged although data might still come
    assert rows(due) == [("a", 10, DAY, {0: 24.0, 1: 19.0, 2: 20.0, 3: 21.0, 4: 22.0, 5: 23.0})]
    assert len(due.receipt_handles) == 25  # none went before: each was held again when its merge moved
    blocks.written(due)
    # a short burst after that: merged once, 10 s after its last slot
    add_slots(blocks, {("a", 10, DAY + 10): 7.0}, [("b1", [(10, DAY + 10)])], now=DAY + 400)
    add_slots(blocks, {("a", 10, DAY + 20): 8.0}, [("b2", [(10, DAY + 20)])], now=DAY + 405)
    assert blocks.take_due(DAY + 414).blocks == {}
    due = blocks.take_due(DAY + 415)
    assert rows(due) == [("a", 10, DAY, {1: 7.0, 2: 8.0})] and due.receipt_handles == ["b1", "b2"]
    blocks.written(due)
    # a block never written that opens after its close (a replay, a restart) waits the same way
    add_slots(blocks, {("b", 10, DAY + 600): 1.0}, [("c1", [(10, DAY + 600)])], now=DAY + 2000)
    add_slots(blocks, {("b", 10, DAY + 610): 2.0}, [("c2", [(10, DAY + 610)])], now=DAY + 2005)
    assert blocks.take_due(DAY + 2014).blocks == {}
    due = blocks.take_due(DAY + 2015)
    assert rows(due) == [("b", 10, DAY + 600, {0: 1.0, 1: 2.0})] and due.receipt_handles == ["c1", "c2"]


def test_a_failed_merge_of_a_reopened_block_is_retried_at_once_with_its_messages():
    blocks = OpenBlocks(block_slots=6, close_delay=5, late_delay=10, late_max=100)
    add_slots(blocks, {("a", 10, DAY): 1.0}, [("r1", [(10, DAY)])], now=DAY)
    blocks.written(blocks.take_due(DAY + 100))
    add_slots(blocks, {("a", 10, DAY + 10): 2.0}, [("r2", [(10, DAY + 10)])], now=DAY + 200)
    due = blocks.take_due(DAY + 300)
    assert due.receipt_handles == ["r2"]
    add_slots(blocks, {("a", 10, DAY + 20): 3.0}, [("r3", [(10, DAY + 20)])], now=DAY + 300)  # while writing
    blocks.restore(due)
    again = blocks.take_due(DAY + 300)  # due at once, with the data that came meanwhile
    assert rows(again) == [("a", 10, DAY, {1: 2.0, 2: 3.0})] and again.receipt_handles == ["r2"]


def test_windows_in_columns_are_set_into_their_blocks():
    blocks = make_blocks()
    held = blocks.add_windows({(10, DAY): {"a": 1.0, "b": 2.0}, (10, DAY + 70): {"a": 3.0}, (60, DAY): {"a": 4.0}},
                              [("r1", [(10, DAY), (10, DAY + 70)])])
    assert held == [(DAY + 2 * SPAN + 5, "r1")]
    assert sorted(rows(blocks.take_due(DAY + 10000))) == [("a", 10, DAY, {0: 1.0}), ("a", 10, DAY + 60, {1: 3.0}),
                                                         ("a", 60, DAY, {0: 4.0}), ("b", 10, DAY, {0: 2.0})]


def test_data_for_a_block_whose_first_write_is_running_goes_with_the_late_data_after_it():
    """Data for a block arrives while its first write runs, more after that write: both wait for
    one merge, and the messages that carried them are never handed out before it."""
    blocks = OpenBlocks(block_slots=6, close_delay=5, late_delay=10, late_max=100)
    add_slots(blocks, {("a", 10, DAY): 1.0}, [("r1", [(10, DAY)])], now=DAY)
    first = blocks.take_due(DAY + 200)
    add_slots(blocks, {("a", 10, DAY + 10): 2.0}, [("r2", [(10, DAY + 10)])], now=DAY + 200)  # while writing
    blocks.written(first)
    add_slots(blocks, {("a", 10, DAY + 20): 3.0}, [("r3", [(10, DAY + 20)])], now=DAY + 201)
    due = blocks.take_due(DAY + 210)  # late (closed when it came): merged once 10 s after the last
    assert due.blocks == {} and due.receipts == []
    due = blocks.take_due(DAY + 211)
    assert rows(due) == [("a", 10, DAY, {1: 2.0, 2: 3.0})] and sorted(due.receipt_handles) == ["r2", "r3"]


def test_a_block_keeps_one_string_per_name_whichever_batch_opened_it():
    """Each batch decodes its names anew; the block that a later batch opens keys the name by the
    string kept already (interned), not by that batch's copy."""
    blocks = OpenBlocks(block_slots=6, close_delay=0)
    first, again = "".join(["a.", "b"]), "".join(["a.", "b"])
    assert first == again and first is not again
    blocks.add_windows({(10, 0): {first: 1.0}})
    blocks.add_windows({(10, 60): {again: 2.0}})  # the next block, opened by another batch's copy
    keys = [key for block in blocks._open.values() for key in block]
    assert len(keys) == 2 and keys[0] is keys[1]
