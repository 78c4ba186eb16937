"""A file whose finer archive keeps less than a coarse block (carbon's ``10s:1h,1min:1d``): the one
coarse slot at the start of the finer archive's window was computed by whisper when the finer
archive held it whole; Turok has only the part the file still has. Such a slot is *settled*
(``rollup.settled_before``): neither the finder's fresh rollup nor turokd's rollup when the block
closes replace its stored value, so reads equal ``whisper.fetch`` right after the import and after
live data closed the block."""
import math

import whisper

from tests.support.whisper_trees import NOW, carbon_path, make_file
from tests.turokd.test_rollups import received
from turok_core.importer.journal import file_key
from turok_core.importer.layout import TreeFile
from turok_core.importer.run import FileImporter
from turok_core.model.config import TurokConfig
from turok_core.model.message import TurokMessage
from turok_core.model.schemas import load_schemas
from turok_core.storage.memory import MemoryBlockStore
from turok_core.storage.series_reader import SeriesReader
from turok_core.turokd.block_writer import BlockWriter
from turok_core.turokd.rollup import rollup_value
from turok_core.wire.cache_query import CacheClient
from turok_core.wire.codec import encode_messages

METRIC = "carbon.style.load"


def setup(tmp_path):
    (tmp_path / "schemas.conf").write_text("[all]\npattern = .*\nretentions = 10s:1h,1min:1d\n")
    (tmp_path / "aggregation.conf").write_text("[all]\npattern = .*\naggregationMethod = average\nxFilesFactor = 0\n")
    config = TurokConfig(schemas_file=str(tmp_path / "schemas.conf"),
                         aggregation_file=str(tmp_path / "aggregation.conf"))
    schemas = load_schemas(config)
    path = carbon_path(tmp_path / "whisper", METRIC)
    make_file(path, [(10, 360), (60, 1440)], "average", 0.0, seed=2, days=1, density=1.0)
    store = MemoryBlockStore(config)
    FileImporter(config, schemas, store, NOW)(TreeFile(str(path), "carbon/style/load.wsp"), file_key(str(path)))
    return config, schemas, str(path), store


def boundary_slot() -> int:
    """The 1 min slot holding the start of the 10 s archive's window at NOW, and that start."""
    first_fine = NOW - NOW % 10 + 10 - 3600
    return first_fine - first_fine % 60


def test_the_finder_keeps_the_imported_boundary_slot_whisper_computed_whole(tmp_path):
    config, schemas, path, store = setup(tmp_path)
    slot = boundary_slot()
    assert slot % 60 == 0 and (NOW - NOW % 10 + 10 - 3600) % 60  # the 10 s window starts mid-slot
    # what a fresh rollup of the 10 s slots the file still has would give: not whisper's value
    fine = store.fetch_series([METRIC], 10, slot, slot + 60)[METRIC]
    partial = rollup_value(fine, "average", 0.0)
    (w_start, w_end, w_step), expected = whisper.fetch(path, NOW - 3 * 3600, NOW, now=NOW)
    assert w_step == 60 and partial != expected[(slot - w_start) // 60]
    for now in (NOW, NOW + 7 * 3600):  # in the fresh span (one 6 h block), and after it
        reader = SeriesReader(store, config, schemas, cache=CacheClient([]), clock=lambda: now)
        assert reader.read([METRIC], 60, w_start, w_end)[METRIC] == expected


def test_turokd_closing_the_block_with_live_data_keeps_it_too(tmp_path):
    config, schemas, path, store = setup(tmp_path)
    slot = boundary_slot()
    (w_start, _end, _step), expected = whisper.fetch(path, slot - 60, slot + 60, now=NOW)
    imported = expected[(slot - w_start) // 60]
    clock = [NOW + 40.0]
    writer = BlockWriter(store, config, schemas, clock=lambda: clock[0], route_old=True)
    live_slot = NOW - NOW % 10 + 20
    writer.hold(received(encode_messages([TurokMessage(METRIC, live_slot, [5.0], 10, "average")]), "live"))
    block_end = NOW - NOW % 21600 + 21600  # the 6 h block of 1 min slots holding both
    assert slot >= block_end - 21600
    for clock[0] in (NOW + 40.0, NOW + 4000.0, block_end + 60.0):  # the 10 s block closes, then the 1 min one
        writer.close()
    stored = store.fetch_series([METRIC], 60, slot, live_slot - live_slot % 60 + 60)[METRIC]
    assert stored[0] == imported and not math.isnan(imported)
    assert stored[-1] is not None  # the block was rolled up: the live slot's minute holds a value
