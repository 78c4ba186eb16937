"""turokd moves slot values too old for their step's archive to the archive whisper would use."""
from turok_core.model.schemas import PolicyCache, SchemaSet
from turok_core.turokd.backfill import ROUTE_SLACK_SECONDS, route_by_age, shortest_retentions
from turok_core.turokd.decode import DecodedBatch

NOW = 1_700_006_400  # a multiple of an hour


def schemas(tmp_path):
    path = tmp_path / "schemas.conf"
    path.write_text("[fast]\npattern = ^fast\\.\nretentions = 10s:1d,1min:7d\n"
                    "[all]\npattern = .*\nretentions = 10s:1h,1min:1d,1h:30d\n")
    agg = tmp_path / "agg.conf"
    agg.write_text("[sum]\npattern = sum$\naggregationMethod = sum\n")
    return SchemaSet(path, agg)


def test_old_values_move_to_the_archive_covering_their_age(tmp_path):
    schema_set = schemas(tmp_path)
    policy = PolicyCache(schema_set.policy_for)
    shortest = shortest_retentions(schema_set)
    assert shortest == {10: 3600, 60: 86400, 3600: 30 * 86400}
    young = NOW - 600
    old = NOW - 3 * 86400 - 3600  # past the 1 min archive: the hour one
    minute_old = NOW - 2 * 3600 - 3600  # past 10s:1h (and the slack), inside 1min:1d
    batch = DecodedBatch(
        windows={(10, young): {"a": 1.0},
                 (10, old): {"a.sum": 2.0, "fast.b": 5.0},
                 (10, old + 10): {"a.sum": 3.0},
                 (10, minute_old): {"a": 4.0},
                 (10, NOW - 40 * 86400): {"a": 6.0},
                 (20, old): {"a": 7.0}},  # a step no archive of the metric has: left alone
        accepted=[("r1", [(10, young), (10, old)]), ("r2", [(10, old + 10)]),
                  ("r3", [(10, minute_old)]), ("r4", [(10, NOW - 40 * 86400)])])
    assert route_by_age(batch, policy, shortest, NOW) == 4
    hour = old - old % 3600
    assert batch.windows == {
        (10, young): {"a": 1.0},
        (60, old): {"fast.b": 5.0},  # fast.*: 10s:1d,1min:7d
        (3600, hour): {"a.sum": 5.0},  # two values of one hour slot: summed, the metric's method
        (60, minute_old - minute_old % 60): {"a": 4.0},
        (10, NOW - 40 * 86400): {"a": 6.0},  # older than every archive: stays where it was sent
        (20, old): {"a": 7.0},
    }
    accepted = dict(batch.accepted)
    assert accepted["r1"] == [(10, young), (60, old), (3600, hour)]
    assert accepted["r2"] == [(3600, hour)]
    assert accepted["r3"] == [(60, minute_old - minute_old % 60)]
    assert accepted["r4"] == [(10, NOW - 40 * 86400)]


def test_a_window_a_little_past_its_retention_is_not_moved(tmp_path):
    schema_set = schemas(tmp_path)
    slot = NOW - 3600 - ROUTE_SLACK_SECONDS // 2
    batch = DecodedBatch(windows={(10, slot): {"a": 1.0}}, accepted=[("r", [(10, slot)])])
    assert route_by_age(batch, PolicyCache(schema_set.policy_for), shortest_retentions(schema_set), NOW) == 0
    assert batch.windows == {(10, slot): {"a": 1.0}}


def test_a_coarse_block_put_whole_keeps_the_backfilled_slots_of_its_id(tmp_path):
    """turokd owning the metric since long: its coarse minute block, rolled up from 10 s slots in
    memory, would be put whole; a backfilled minute of the same block must survive it."""
    from turok_core.model.config import TurokConfig
    from turok_core.model.message import TurokMessage
    from turok_core.storage.memory import MemoryBlockStore
    from turok_core.turokd.block_writer import BlockWriter
    from turok_core.wire.codec import encode_json
    from turok_core.wire.queues import ReceivedMessage

    schema_set = schemas(tmp_path)
    config = TurokConfig()
    store = MemoryBlockStore(config)
    span = store.archive_span(60, 1)  # the minute archive is coarse here: its block, not the grid cell
    block = NOW - NOW % span - span  # a whole minute block, closed
    young, old_minute = block + span - 600, block + 60
    now = [float(young + 3000)]  # the 10 s slot is young (1 h), the minute is past it
    writer = BlockWriter(store, config, schema_set, clock=lambda: now[0], owned_since=lambda m: 0.0,
                         route_old=True)
    bodies = [encode_json(TurokMessage("a", young + i * 10, [1.0], 10, "average")) for i in range(6)]
    bodies.append(encode_json(TurokMessage("a", old_minute, [7.0], 10, "average")))
    batch = writer.hold([ReceivedMessage(b, f"r{i}", f"m{i}", 1) for i, b in enumerate(bodies)])
    assert batch.moved == 1
    writer.close_all()
    stored = store.fetch_slots(60, [("a", block, block + span)])["a"]
    assert stored == {old_minute: 7.0, young: 1.0}
