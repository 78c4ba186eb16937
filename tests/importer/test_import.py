"""A whole import in this process (memory block store and index queue): names announced as turokd
announces them, bad files reported and skipped, the journal, idempotency, live data winning."""
import copy
import io

import pytest

from tests.support.whisper_trees import NOW, carbon_path, make_file
from turok_core.importer.journal import Journal
from turok_core.importer.progress import Progress
from turok_core.importer.run import Importer, estimate
from turok_core.model.config import TurokConfig
from turok_core.model.schemas import load_schemas
from turok_core.storage.memory import MemoryBlockStore
from turok_core.wire.announcements import decode_announcement
from turok_core.wire.memory_queue import MemoryQueue

SCHEMAS = """\
[fast]
pattern = ^fast\\.
retentions = 10s:1h,1min:1d

[default]
pattern = .*
retentions = 1min:1d,1h:7d
"""
AGGREGATION = """\
[sums]
pattern = \\.count$
aggregationMethod = sum
xFilesFactor = 0

[default]
pattern = .*
aggregationMethod = average
xFilesFactor = 0.3
"""
NAMES = ["fast.web1.cpu", "fast.web2.count", "slow.db.disk", "tagged.m;env=prod;host=a.b"]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "whisper"
    for i, name in enumerate(NAMES):
        archives = [(10, 360), (60, 1440)] if name.startswith("fast.") else [(60, 1440), (3600, 168)]
        make_file(carbon_path(root, name), archives, "sum" if name.endswith(".count") else "average",
                  0.0 if name.endswith(".count") else 0.3, seed=i, days=2)
    return root


@pytest.fixture
def config(tmp_path):
    (tmp_path / "schemas.conf").write_text(SCHEMAS)
    (tmp_path / "aggregation.conf").write_text(AGGREGATION)
    return TurokConfig(schemas_file=str(tmp_path / "schemas.conf"), aggregation_file=str(tmp_path / "aggregation.conf"))


def run(config, store, roots, journal_path, queue=None, reports=None):
    queue = queue if queue is not None else MemoryQueue()
    importer = Importer(config, load_schemas(config), Journal(str(journal_path)), queue, NOW, store=store,
                        progress=Progress(10, stream=io.StringIO()),
                        report=(reports.append if reports is not None else lambda line: None))
    return importer.run([str(r) for r in roots])


def announced(queue):
    names = []
    for message in queue.receive(10, 0):
        names += decode_announcement(message.body)
    return sorted(names)


def test_an_import_writes_announces_journals_and_a_second_changes_nothing(tmp_path, tree, config):
    store, queue = MemoryBlockStore(config), MemoryQueue()
    result = run(config, store, [tree], tmp_path / "j1", queue)
    assert (result.files, result.skipped, result.bad) == (4, 0, [])
    assert result.stats.items_written == result.blocks > 0 and result.points > 0
    assert announced(queue) == sorted(NAMES)
    tables = copy.deepcopy(store._tables)
    assert all(name.startswith("turok_") for name in tables)
    # the same arguments: the journal skips every file
    again = run(config, store, [tree], tmp_path / "j1")
    assert (again.files, again.skipped, again.stats.write_calls) == (0, 4, 0)
    # a fresh journal: every file read again, every block merged unchanged, nothing written
    fresh = run(config, store, [tree], tmp_path / "j2")
    assert fresh.files == 4 and fresh.stats.items_written == 0 and fresh.stats.items_unchanged == result.blocks
    assert fresh.stats.write_units == 0
    assert store._tables == tables  # byte for byte


def test_blocks_turokd_wrote_win_over_imported_ones(tmp_path, tree, config):
    store = MemoryBlockStore(config)
    slot = NOW - NOW % 60 - 3600
    store.write_slots([("slow.db.disk", 60, slot, -42.0), ("slow.db.disk", 60, slot + 60, -43.0)])
    run(config, store, [tree], tmp_path / "j")
    assert store.fetch_series(["slow.db.disk"], 60, slot, slot + 120)["slow.db.disk"] == [-42.0, -43.0]
    imported = store.fetch_series(["slow.db.disk"], 60, slot - 3600, slot)["slow.db.disk"]
    assert sum(v is not None for v in imported) > 20


def test_bad_files_are_reported_skipped_and_counted(tmp_path, tree, config):
    good = sorted(p for p in tree.rglob("*.wsp"))
    (tree / "bad").mkdir()
    (tree / "bad" / "empty.wsp").write_bytes(b"")
    (tree / "bad" / "text.wsp").write_text("fast.x 1 1700000000\n")
    truncated = tree / "bad" / "truncated.wsp"
    truncated.write_bytes(good[0].read_bytes()[:5000])
    (tree / "bad" / "gl*ob.wsp").write_bytes(good[0].read_bytes())  # a name the rule refuses
    hashed = tree / "_tagged" / "abc" / "def" / ("0" * 64 + ".wsp")  # carbon's TAG_HASH_FILENAMES
    hashed.parent.mkdir(parents=True)
    hashed.write_bytes(good[0].read_bytes())
    reports: list[str] = []
    store = MemoryBlockStore(config)
    result = run(config, store, [tree], tmp_path / "j", reports=reports)
    assert result.files == 4 and len(result.bad) == 5
    reasons = dict(result.bad)
    assert "too short" in reasons[str(tree / "bad" / "empty.wsp")]
    assert "not a whisper file" in reasons[str(tree / "bad" / "text.wsp")]
    assert reasons[str(truncated)].startswith("truncated: 5000 bytes")
    assert "no metric name: character '*'" in reasons[str(tree / "bad" / "gl*ob.wsp")]
    assert "TAG_HASH_FILENAMES" in reasons[str(hashed)]
    assert len(reports) == 5 and all("skipped" in line and str(tree) in line for line in reports)
    # bad files are not journaled: a second run reports them again, and imports nothing twice
    again = run(config, store, [tree], tmp_path / "j")
    assert again.skipped == 4 and len(again.bad) == 5 and again.stats.items_written == 0


def test_the_estimate_counts_the_blocks_the_import_writes_at_most(tmp_path, tree, config):
    store = MemoryBlockStore(config)
    journal = Journal(str(tmp_path / "j"))
    cost, done = estimate([str(tree)], config, load_schemas(config), journal, NOW, store.archive_span)
    result = run(config, store, [tree], tmp_path / "j")
    assert done == 0 and cost.files == 4
    assert result.blocks <= cost.blocks <= 2 * result.blocks  # two days of data in one- and seven-day windows
    assert cost.write_units == cost.blocks and "write units" in cost.render() and "$" in cost.render()
    cost, done = estimate([str(tree)], config, load_schemas(config), Journal(str(tmp_path / "j")), NOW,
                          store.archive_span)
    assert (cost.files, cost.blocks, done) == (0, 0, 4)


def test_a_journal_line_cut_short_is_ignored(tmp_path):
    path = tmp_path / "journal"
    journal = Journal(str(path))
    journal.record([("/a b/c.wsp", 10, 20), ("/d.wsp", 1, 2)])
    with open(path, "ab") as handle:
        handle.write(b"5\t6\t/half")
    reread = Journal(str(path))
    assert ("/a b/c.wsp", 10, 20) in reread and ("/d.wsp", 1, 2) in reread and len(reread) == 2
    assert ("/a b/c.wsp", 11, 20) not in reread  # the file changed: imported again


def test_progress_shows_files_points_write_units_and_eta():
    clock = iter([0.0, 10.0, 10.0, 20.0]).__next__
    stream = io.StringIO()
    progress = Progress(100, stream=stream, log_interval=5.0, clock=clock)
    progress.add(25, 1_500_000, 2500)
    line = stream.getvalue()
    assert "files 25/100" in line and "points 1.5M" in line and "write units 2.5k" in line
    assert "ETA 0:00:30" in line and "25.0%" in line


class FailingAfter:
    """A block store that fails (Ctrl-C, or AWS refusing) on its ``calls``-th write."""

    def __init__(self, store, calls, error):
        self.store, self.calls, self.error = store, calls, error

    def archive_span(self, step, level):
        return self.store.archive_span(step, level)

    def write_blocks(self, *args, **kwargs):
        self.calls -= 1
        if self.calls == 0:
            raise self.error
        return self.store.write_blocks(*args, **kwargs)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("BatchWriteItem kept failing")])
def test_an_interrupted_import_journals_what_finished_and_resumes(tmp_path, tree, config, error):
    store, queue = MemoryBlockStore(config), MemoryQueue()
    with pytest.raises(type(error)):
        run(config, FailingAfter(store, 3, error), [tree], tmp_path / "j", queue)
    assert len(Journal(str(tmp_path / "j"))) == 2  # the two files written before, announced too
    assert len(announced(queue)) == 2
    resumed = run(config, store, [tree], tmp_path / "j", queue)
    assert (resumed.files, resumed.skipped) == (2, 2)
    whole = MemoryBlockStore(config)
    run(config, whole, [tree], tmp_path / "whole")
    assert store._tables == whole._tables
