"""The finder notices an edit of the schema files while graphite-web runs (``model/schema_watch.py``):
reads follow the new files, and what the old files stored stays readable; a broken edit is
logged and the previous files stay in force."""
import logging

import pytest

from tests.finder.test_past_schemas import DAY, EDIT, NEW, NOW, OLD, NoCache
from turok_core.model.config import TurokConfig
from turok_core.model.schema_history import SchemaHistory
from turok_core.model.schemas import load_schemas
from turok_core.storage.memory import MemoryBlockStore

pytestmark = pytest.mark.usefixtures("graphite_django")


def test_reads_follow_an_edit_and_still_find_what_the_old_files_stored(tmp_path, caplog):
    from finder.finder import TurokFinder

    schemas_file = tmp_path / "schemas.conf"
    schemas_file.write_text(OLD)
    config = TurokConfig(schemas_file=str(schemas_file), aggregation_file=str(tmp_path / "none.conf"),
                         schema_reload_seconds=1e-6)
    schemas = load_schemas(config)
    store = MemoryBlockStore(config)
    store.write_slots([("a.b", 10, t, 1.0) for t in range(EDIT - DAY + 10, EDIT, 10)])  # by the old files
    store.write_slots([("a.b", 30, t, 2.0) for t in range(EDIT, NOW, 30)])  # by the new ones, after the edit
    finder = TurokFinder(config=config, schemas=schemas, index=object(), blocks=store, cache=NoCache(),
                         clock=lambda: NOW, history=SchemaHistory.current_only(schemas))

    def values(start, end):
        (_start, _end, step), found = finder.fetch_paths(["a.b"], start, end)["a.b"]
        return step, {v for v in found if v is not None}

    assert values(NOW - 3600, NOW) == (10, set())  # the old files: 10 s, nothing stored there yet

    schemas_file.write_text(OLD + "[broken\n")
    with caplog.at_level(logging.ERROR, logger="turok.finder"):
        assert values(NOW - 3600, NOW) == (10, set())
    assert "edited but refused" in caplog.text

    schemas_file.write_text(NEW)
    assert values(NOW - 3600, NOW) == (30, {2.0})  # read by the new files
    step, seen = values(EDIT - 3600, EDIT + 3600)  # across the edit: both parts
    assert seen == {1.0, 2.0}
