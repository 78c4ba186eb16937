"""Planning a file's blocks: archives of a Turok step copied, finer ones rolled up as turokd does."""
import pytest

from tests.support.whisper_trees import NOW, make_file, write_as_carbon
from turok_core.importer.plan import plan_file, planned_blocks
from turok_core.importer.whisper_file import read_whisper
from turok_core.model.config import TurokConfig
from turok_core.model.schemas import Archive, MetricPolicy
from turok_core.storage.memory import MemoryBlockStore


def imported(path, policy, block_slots=0):
    store = MemoryBlockStore(TurokConfig(block_slots=block_slots))
    header, data = read_whisper(str(path))
    plan = plan_file("m", header, data, policy, NOW, store.archive_span)
    store.write_blocks(plan.blocks, assume_new=False, fill_gaps=True)
    assert len(plan.blocks) <= planned_blocks(header, policy, NOW, store.archive_span)
    return store, plan


def policy_of(archives, aggregation="average", xff=0.5):
    return MetricPolicy(tuple(Archive(step, step * points) for step, points in archives), aggregation, xff, "t")


@pytest.mark.parametrize("block_slots", [0, 7])
def test_the_same_schema_is_copied_slot_for_slot(tmp_path, block_slots):
    import whisper

    archives = [(10, 360), (60, 600), (600, 300)]
    path = tmp_path / "m.wsp"
    make_file(path, archives, "max", 0.2, seed=3, days=2.5, kind="special")
    store, plan = imported(path, policy_of(archives, "maximum", 0.2), block_slots)
    assert plan.points == plan.slots > 0
    for step, points in archives:
        (start, end, got_step), expected = whisper.fetch(str(path), NOW - step * points + 1, NOW, now=NOW)
        assert got_step == step
        expected = [None if v != v else v for v in expected]
        assert store.fetch_series(["m"], step, start, end)["m"] == expected


@pytest.mark.parametrize("aggregation, carbon_name", [("sum", "sum"), ("maximum", "max"), ("minimum", "min"),
                                                       ("last", "last")])
def test_a_coarser_turok_schema_is_rolled_up_from_the_finest_archive(tmp_path, aggregation, carbon_name):
    """File 10s:2h,1min:1d; Turok 10s:1h,5min:1d. Whisper itself, fed the same points under the
    Turok schema, is the reference (exact for these methods, whichever finer archive rolls up)."""
    import whisper

    points = make_file(tmp_path / "file.wsp", [(10, 720), (60, 1440)], carbon_name, 0.0, seed=5, days=1, kind="int")
    reference = tmp_path / "turok.wsp"
    whisper.create(str(reference), [(10, 360), (300, 288)], xFilesFactor=0.0, aggregationMethod=carbon_name)
    write_as_carbon(reference, points)  # as carbon would have written them under that schema
    store, _plan = imported(tmp_path / "file.wsp", policy_of([(10, 360), (300, 288)], aggregation, 0.0))
    (start, end, step), expected = whisper.fetch(str(reference), NOW - 86400 + 1, NOW, now=NOW)
    assert step == 300
    got = store.fetch_series(["m"], 300, start, end)["m"]
    assert sum(v is not None for v in got) > 200
    assert got == expected
    (start, end, step), expected = whisper.fetch(str(reference), NOW - 3600 + 1, NOW, now=NOW)
    assert store.fetch_series(["m"], 10, start, end)["m"] == expected


def test_xfilesfactor_and_average_follow_the_turok_schema(tmp_path):
    path = tmp_path / "m.wsp"
    import whisper

    whisper.create(str(path), [(60, 1440)], xFilesFactor=0.9, aggregationMethod="sum")
    base = NOW - NOW % 3600 - 2 * 3600
    whisper.update_many(str(path), [(base + i * 60, float(i)) for i in range(0, 30)]  # half of the first hour
                        + [(base + 3600 + i * 60, 2.0) for i in range(0, 60, 2)], now=NOW)  # every other minute
    store, _plan = imported(path, policy_of([(60, 1440), (3600, 24)], "average", 0.5))
    assert store.fetch_series(["m"], 3600, base, base + 7200)["m"] == [float(sum(range(30))) / 30, 2.0]
    store, _plan = imported(path, policy_of([(60, 1440), (3600, 24)], "average", 0.6))
    assert store.fetch_series(["m"], 3600, base, base + 7200)["m"] == [None, None]  # 30/60 known < 0.6


def test_nothing_is_invented_at_a_resolution_finer_than_the_file(tmp_path):
    path = tmp_path / "m.wsp"
    make_file(path, [(10, 360), (60, 1440)], "average", 0.5, seed=9, days=1)
    store, plan = imported(path, policy_of([(10, 8640), (60, 1440)]))  # Turok keeps 10s a whole day
    first_10s = min(start + min(values) * 10 for _m, step, start, values in plan.blocks if step == 10)
    assert first_10s >= NOW - 3600  # only the hour the file has at 10s
    assert any(step == 60 for _m, step, _s, _v in plan.blocks)


def test_a_coarse_archive_is_planned_in_coarse_blocks_as_turokd_writes_them(tmp_path):
    """At the default spans a 1-minute archive under a 10 s one is in 720-slot blocks (12 hours,
    ``coarse_block_span``), the 10 s one in the grid's 432: the keys turokd's rollups use."""
    archives = [(10, 8640), (60, 2880)]
    path = tmp_path / "m.wsp"
    make_file(path, archives, "average", 0.0, seed=4, days=2, kind="special")
    _store, plan = imported(path, policy_of(archives))
    starts = {step: {start for _m, s, start, _values in plan.blocks if s == step} for step, _ in archives}
    assert starts[60] and all(start % 43200 == 0 for start in starts[60])
    assert any(max(values) >= 360 for _m, step, _start, values in plan.blocks if step == 60)
    assert any(start % 43200 for start in starts[10]) and all(start % 4320 == 0 for start in starts[10])
