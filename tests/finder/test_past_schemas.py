"""A metric whose schema files were edited reads each part of a range from where it is stored."""
import pytest

from finder.past_schemas import merge_parts
from finder.reader import Window
from turok_core.model.config import TurokConfig
from turok_core.model.schema_history import SchemaHistory, files_digest
from turok_core.model.schemas import SchemaSet
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.table_catalog import TableCatalog

OLD = "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n"
NEW = "[all]\npattern = .*\nretentions = 30s:7d,5min:1y\n"
DAY = 86400
EDIT = 1_700_006_400 - 1_700_006_400 % DAY  # the files were edited at a midnight
NOW = EDIT + 12 * 3600

pytestmark = pytest.mark.usefixtures("graphite_django")


class NoCache:
    def query(self, metrics, start, end):
        return {}


class Blocks:
    """A memory store that counts reads and can hide tables (as if the keeper dropped them)."""

    def __init__(self, store):
        self.store, self.reads, self.hidden, self.listings = store, [], set(), 0

    def fetch_series(self, metrics, step, start, end):
        self.reads.append(step)
        return self.store.fetch_series(metrics, step, start, end)

    def table_names(self):
        self.listings += 1
        return [name for name in self.store.table_names() if name not in self.hidden]


def history() -> SchemaHistory:
    return SchemaHistory.from_records(
        [{"since": EDIT - 100 * DAY, "digest": files_digest(OLD, ""), "schemas": OLD, "aggregation": ""},
         {"since": EDIT, "digest": files_digest(NEW, ""), "schemas": NEW, "aggregation": ""}],
        SchemaSet.from_texts(NEW, ""))


def finder_over(blocks, past):
    from finder.finder import TurokFinder

    return TurokFinder(config=TurokConfig(), schemas=past.current, index=object(), blocks=blocks, cache=NoCache(),
                       clock=lambda: NOW, history=past)


def stored() -> MemoryBlockStore:
    """Before the edit: 10 s points (and their minutes) for a day; after it: 30 s points."""
    store = MemoryBlockStore(TurokConfig())
    store.write_slots([("a.b", 10, t, float(t % 1000)) for t in range(EDIT - DAY + 10, EDIT, 10)])
    store.write_slots([("a.b", 60, t, 1.0) for t in range(EDIT - 20 * DAY, EDIT, 60)])
    store.write_slots([("a.b", 30, t, 2.0) for t in range(EDIT, NOW, 30)])
    store.write_slots([("a.b", 300, t, 3.0) for t in range(EDIT, NOW, 300)])
    store.write_slots([("other", 30, t, 5.0) for t in range(EDIT - 3 * DAY, NOW, 30)])  # never edited: not merged
    return store


def test_a_render_across_the_edit_shows_both_parts_at_their_own_resolutions():
    blocks = Blocks(stored())
    finder = finder_over(blocks, history())
    (start, end, step), values = finder.reader("a.b").fetch(EDIT - 6 * 3600, NOW, now=NOW)
    assert step == 10 and start <= EDIT - 6 * 3600 + 10 and end == NOW - NOW % 30 + 30
    at = dict(zip(range(start, end, step), values))
    assert at[EDIT - 10] == float((EDIT - 10) % 1000) and at[EDIT - 3600] == float((EDIT - 3600) % 1000)
    assert at[EDIT] == at[EDIT + 10] == at[EDIT + 20] == 2.0  # a 30 s value fills its three 10 s slots
    assert sorted(set(blocks.reads)) == [10, 30]
    # three days back: the new 30 s archive, the old minutes (past the 10 s day) each over two slots
    (start, end, step), values = finder.reader("a.b").fetch(EDIT - 3 * DAY, NOW, now=NOW)
    at = dict(zip(range(start, end, step), values))
    assert step == 30 and at[EDIT - 2 * DAY] == at[EDIT - 2 * DAY + 30] == 1.0 and at[EDIT + 30] == 2.0
    # a metric with one policy in every version reads as before: one window, its own resolution
    (_start, _end, step), values = finder.reader("other").fetch(EDIT - 6 * 3600, NOW, now=NOW)
    assert step == 30 and set(values[:-1]) == {5.0}  # (the slot of now: nothing yet)


def test_old_resolutions_without_tables_are_not_read_and_tables_are_listed_once():
    blocks = Blocks(stored())
    blocks.hidden = {name for name in blocks.store.table_names() if name.endswith("_10sec")}
    finder = finder_over(blocks, history())
    for _ in range(5):
        (_start, _end, step), values = finder.reader("a.b").fetch(EDIT - 6 * 3600, NOW, now=NOW)
    assert step == 30 and blocks.reads == [30] * 5  # the old 10 s tables are gone: never asked
    assert blocks.listings == 1
    assert values[-2] == 2.0 and values[0] is None


def test_without_an_edit_only_the_current_files_are_read():
    blocks = Blocks(stored())
    finder = finder_over(blocks, SchemaHistory.current_only(SchemaSet.from_texts(NEW, "")))
    (_start, _end, step), values = finder.reader("a.b").fetch(EDIT - 6 * 3600, NOW, now=NOW)
    assert step == 30 and blocks.reads == [30] and blocks.listings == 0
    assert values[0] is None  # what the edit hid before this change


def test_merge_prefers_the_newest_value_and_spreads_coarse_ones():
    new = (Window(60, 120, 30), [None, 7.0])
    old = (Window(0, 120, 10), [1.0, 2.0, None, 4.0, 5.0, 6.0, 8.0, 9.0, 9.5, 10.0, 11.0, 12.0])
    assert merge_parts([new, old]) == ((0, 120, 10), [1.0, 2.0, None, 4.0, 5.0, 6.0, 8.0, 9.0, 9.5, 7.0, 7.0, 7.0])
    assert merge_parts([new, (Window(0, 120, 10), [None] * 12)]) == ((60, 120, 30), [None, 7.0])
    assert merge_parts([(Window(0, 60, 30), None)]) == ((0, 60, 30), [None, None])


def test_catalog_lists_once_per_ttl_and_knows_days_and_steps():
    now = [0.0]
    names = ["turok_14-11-2023_10sec", "turok_15-11-2023_1min", "other_15-11-2023_1min", "turok_leases"]
    catalog = TableCatalog(lambda: names, "turok", "_", ttl=60, clock=lambda: now[0])
    day = 1_699_920_000  # 14-11-2023
    assert catalog.has_any(10, day + 5, day + 10) and not catalog.has_any(60, day, day + DAY)
    assert catalog.has_any(60, day, day + DAY + 1) and not catalog.has_any(30, day, day + 2 * DAY)
    now[0] = 59.0
    catalog.has_any(10, day, day + 1)
    assert catalog.listings == 1
    now[0] = 60.0
    catalog.has_any(10, day, day + 1)
    assert catalog.listings == 2
    assert TableCatalog(None, "turok", "_").has_any(10, 0, 1)
