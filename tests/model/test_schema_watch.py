"""``SchemaWatch``: an edit of either schema file is noticed at most every interval, by mtime and
size; a broken edit is reported once and the files in force kept; a touch changes nothing.
``SchemaHistory.with_current``: the reloaded files become the newest version."""
import os

from turok_core.model.config import TurokConfig
from turok_core.model.schema_history import SchemaHistory
from turok_core.model.schema_watch import SchemaWatch
from turok_core.model.schemas import load_schemas

OLD = "[all]\npattern = .*\nretentions = 10s:1d,1min:30d\n"
NEW = "[all]\npattern = .*\nretentions = 1min:1d,1h:30d\n"


def write(path, text, bump):
    path.write_text(text)
    os.utime(path, ns=(bump * 10**9, bump * 10**9))


def test_edits_are_noticed_each_interval_broken_ones_reported_once(tmp_path):
    schemas, aggregation = tmp_path / "s.conf", tmp_path / "a.conf"
    write(schemas, OLD, 1)
    write(aggregation, "[all]\npattern = .*\naggregationMethod = max\nxFilesFactor = 0\n", 1)
    config = TurokConfig(schemas_file=str(schemas), aggregation_file=str(aggregation))
    now = [0.0]
    watch = SchemaWatch(config, load_schemas(config), clock=lambda: now[0])
    assert watch.interval == 60.0 and watch.poll() is None
    write(schemas, NEW, 2)
    now[0] = 59.0
    assert watch.poll() is None  # not yet: carbon's minute
    now[0] = 60.0
    reload = watch.poll()
    assert reload is not None and reload.schemas is not None and reload.error == ""
    assert reload.schemas.policy_for("x").step == 60 and watch.current is reload.schemas
    write(aggregation, "[all]\npattern = (\n", 3)
    now[0] = 120.0
    broken = watch.poll()
    assert broken is not None and broken.schemas is None and "a.conf" in broken.error
    now[0] = 180.0
    assert watch.poll() is None  # the same broken files: reported once
    write(aggregation, "[all]\npattern = .*\naggregationMethod = max\nxFilesFactor = 0\n", 4)
    now[0] = 240.0
    assert watch.poll() is None  # fixed back to what is in force: nothing to change
    write(schemas, NEW, 5)  # touched, same content
    now[0] = 300.0
    assert watch.poll() is None
    schemas.unlink()
    now[0] = 360.0
    gone = watch.poll()
    assert gone is not None and gone.schemas is None and watch.current.policy_for("x").step == 60


def test_no_reload_when_the_interval_is_zero(tmp_path):
    schemas = tmp_path / "s.conf"
    write(schemas, OLD, 1)
    config = TurokConfig(schemas_file=str(schemas), schema_reload_seconds=0)
    watch = SchemaWatch(config, load_schemas(config), clock=lambda: 1e9)
    write(schemas, NEW, 2)
    assert watch.poll() is None


def test_the_reloaded_files_become_the_newest_version(tmp_path):
    schemas = tmp_path / "s.conf"
    write(schemas, OLD, 1)
    old = load_schemas(TurokConfig(schemas_file=str(schemas)))
    write(schemas, NEW, 2)
    new = load_schemas(TurokConfig(schemas_file=str(schemas)))
    history = SchemaHistory.current_only(old).with_current(new, 1000.0)
    assert [v.since for v in history.versions] == [float("-inf"), 1000.0] and history.current is new
    assert history.with_current(new, 2000.0).versions[-1].since == 1000.0  # the same files: unchanged
