"""Imported whisper history rendered through graphite-web (its Store and evaluator, the Turok finder)
on DynamoDB and SQS (moto), with ``whisper.fetch`` over the same range as the reference."""
import datetime

import pytest

from tests.conftest import with_schema_files
from tests.support.whisper_trees import NOW, carbon_path, make_file
from turok_core.importer.journal import Journal
from turok_core.importer.run import Importer
from turok_core.model.schemas import load_schemas
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.table_catalog import list_table_names

pytestmark = pytest.mark.usefixtures("graphite_django")

SCHEMAS = """\
[fast]
pattern = ^fast\\.
retentions = 10s:6h,1min:1d,10min:7d

[short]
pattern = ^short\\.
retentions = 10s:1h,1min:1d,1h:7d

[default]
pattern = .*
retentions = 1min:1d,1h:7d
"""
AGGREGATION = """\
[count]
pattern = \\.count$
aggregationMethod = sum
xFilesFactor = 0

[max]
pattern = \\.max$
aggregationMethod = max
xFilesFactor = 0.1

[min]
pattern = \\.min$
aggregationMethod = min
xFilesFactor = 0.5

[last]
pattern = \\.last$
aggregationMethod = last
xFilesFactor = 0.9

[default]
pattern = .*
aggregationMethod = average
xFilesFactor = 0.3
"""
# name → (archives as carbon's schema above gives them, whisper method, xff, kind of values, density)
FILES = {
    "fast.web1.count": ([(10, 2160), (60, 1440), (600, 1008)], "sum", 0.0, "int", 0.9),
    "fast.web1.max": ([(10, 2160), (60, 1440), (600, 1008)], "max", 0.1, "double", 0.5),
    "fast.web2.min": ([(10, 2160), (60, 1440), (600, 1008)], "min", 0.5, "special", 0.8),
    "fast.web2.last": ([(10, 2160), (60, 1440), (600, 1008)], "last", 0.9, "decimal", 0.97),
    "slow.db.disk": ([(60, 1440), (3600, 168)], "average", 0.3, "decimal", 0.6),
    # carbon's own example: the 10 s archive keeps less than a block of 1 min slots (6 h)
    "short.web1.load": ([(10, 360), (60, 1440), (3600, 168)], "average", 0.3, "decimal", 0.95),
    "slow.db.free;dc=eu.west;host=db1": ([(60, 1440), (3600, 168)], "average", 0.3, "special", 0.7),
}
# the 1 min range ending at NOW - 3600 holds short.web1.load's 1 min slot that starts before its 10 s
# window (settled: whisper's value, not a rollup of the part the 10 s archive still has)
RANGES = [(NOW - 1800, NOW), (NOW - 3599, NOW - 600), (NOW - 5 * 3600 - 5, NOW - 3600),  # 10s (fast), 1min
          (NOW - 20 * 3600, NOW - 7 * 3600), (NOW - 2 * 86400, NOW - 86400),  # 1min; 10min or 1h
          (NOW - 4 * 86400, NOW), (NOW - 8 * 86400, NOW - 6 * 86400)]  # before any data: gaps


def utc(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def test_rendered_imports_equal_whisper_fetch_and_a_second_import_changes_nothing(turok_config, tmp_path,
                                                                                  monkeypatch):
    import graphite.render.datalib as datalib
    import whisper
    from django.conf import settings
    from graphite.render.evaluator import evaluateTarget
    from graphite.storage import Store
    from graphite.tags.base import DummyTagDB

    from finder import TurokFinder
    from turok_core.index.s3_cache import IndexCache
    from turok_core.index.s3_store import IndexStore
    from turok_core.runtime.aws import make_client
    from turok_core.storage.tables import BlockStore
    from turok_core.wire.announcements import decode_announcement
    from turok_core.wire.queues import MessageQueue

    config = with_schema_files(turok_config, tmp_path, SCHEMAS, AGGREGATION).replace(index_shards=4,
                                                                                     index_refresh_seconds=0)
    root = tmp_path / "whisper"
    paths = {}
    for seed, (name, (archives, method, xff, kind, density)) in enumerate(FILES.items()):
        paths[name] = carbon_path(root, name)
        make_file(paths[name], archives, method, xff, seed=seed, days=3, density=density, kind=kind)
    client = make_client("dynamodb", config)
    queue = MessageQueue.from_config(make_client("sqs", config), config, config.index_queue_name)
    schemas = load_schemas(config)
    result = Importer(config, schemas, Journal(str(tmp_path / "journal")), queue, NOW, store=BlockStore(client, config),
                      report=print).run([str(root)])
    assert (result.files, result.bad) == (len(FILES), [])

    # the indexer's part: announcements from the index queue into the S3 index
    names = []
    for _ in range(5):
        messages = queue.receive(10, 0)
        names += [n for m in messages for n in decode_announcement(m.body)]
        queue.delete([m.receipt_handle for m in messages])
    assert sorted(names) == sorted(FILES)
    IndexStore(make_client("s3", config), config).add_names(names)

    finder = TurokFinder(config=config, schemas=schemas, index=IndexCache(make_client("s3", config), config),
                         blocks=BlockStore(client, config), clock=lambda: NOW)
    monkeypatch.setattr(datalib, "STORE", Store(finders=[finder], tagdb=DummyTagDB(settings)))
    steps_seen = set()
    for start, end in RANGES:
        context = {"startTime": utc(start), "endTime": utc(end), "now": utc(NOW), "localOnly": False,
                   "template": {}, "args": ([], {}), "xFilesFactor": 0}
        rendered = {s.pathExpression: s for s in evaluateTarget(context, list(FILES))}
        for name, path in paths.items():
            (w_start, w_end, w_step), expected = whisper.fetch(str(path), start, end, now=NOW)
            series = rendered[name]
            assert (series.start, series.end, series.step) == (w_start, w_end, w_step), (name, start, end)
            # NaN (whisper's average of inf and -inf) is a gap in Turok's blocks, NaN again when rolled up fresh
            assert [None if v != v else v for v in series] == [None if v != v else v for v in expected], (
                name, start, end)
            steps_seen.add(w_step)
    assert steps_seen == {10, 60, 600, 3600}

    def tables():
        found = {}
        for table in list_table_names(client):
            if table.startswith(config.table_prefix + config.table_joiner):
                for item in client.scan(TableName=table, ConsistentRead=True)["Items"]:
                    if item["metric"]["S"] == RECORD_METRIC:
                        continue
                    found[(table, item["metric"]["S"], item["start_time"]["N"])] = bytes(item["datapoints"]["B"])
        return found

    before = tables()
    assert len(before) == result.blocks
    again = Importer(config, schemas, Journal(str(tmp_path / "other-journal")), queue, NOW,
                     store=BlockStore(client, config)).run([str(root)])
    assert again.files == len(FILES) and again.stats.items_written == 0 and again.stats.write_units == 0
    assert tables() == before
