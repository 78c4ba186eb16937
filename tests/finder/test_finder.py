"""The graphite-web finder, driven in-process through graphite-web's own Store and evaluator.

Names come from a real S3 index on the moto server; points from a block store (``MemoryBlockStore``,
and the real DynamoDB one). Reads are compared with whisper itself.
"""
import datetime
import os
import random

import pytest

from turok_core.index.s3_cache import IndexCache
from turok_core.index.s3_store import IndexStore
from turok_core.runtime.aws import make_client
from turok_core.storage.memory import MemoryBlockStore

NOW = 1_700_000_000 - 1_700_000_000 % 86400 + 7 * 3600 + 17  # 07:00:17 UTC, mid-slot
SLOT = NOW - NOW % 10  # the current 10 s slot
SCHEMAS = """\
[fast]
pattern = ^fast\\.
retentions = 10s:6h,1min:7d

[default]
pattern = .*
retentions = 60s:1d,1h:30d
"""


pytestmark = pytest.mark.usefixtures("graphite_django")


class CountingBlocks:
    """Wraps a block store: records every fetch_series call (and DynamoDB BatchGetItem calls)."""

    def __init__(self, store, client=None) -> None:
        self.store = store
        self.calls: list[tuple[tuple[str, ...], int, int, int]] = []
        self.batch_gets = 0
        if client is not None:
            client.meta.events.register("before-call.dynamodb.BatchGetItem", self._count)

    def _count(self, **_):
        self.batch_gets += 1

    def write_slots(self, slots):
        return self.store.write_slots(list(slots))

    def fetch_series(self, metrics, step, start, end):
        self.calls.append((tuple(metrics), step, start, end))
        return self.store.fetch_series(metrics, step, start, end)


@pytest.fixture(params=["memory", "dynamodb"])
def setup(request, turok_config, tmp_path):
    """A finder over a real S3 index and a block store: in memory, or the real DynamoDB one."""
    from finder import TurokFinder
    from turok_core.model.schemas import load_schemas
    from turok_core.storage.tables import BlockStore

    schemas_file = tmp_path / "storage-schemas.conf"
    schemas_file.write_text(SCHEMAS)
    config = turok_config.replace(index_shards=4, schemas_file=str(schemas_file), index_refresh_seconds=0)
    if request.param == "memory":
        blocks = CountingBlocks(MemoryBlockStore(config))
    else:
        client = make_client("dynamodb", config)
        blocks = CountingBlocks(BlockStore(client, config), client)
    finder = TurokFinder(config=config, schemas=load_schemas(config),
                         index=IndexCache(make_client("s3", config), config), blocks=blocks, clock=lambda: NOW)
    return finder, blocks, config


NAMES = ["fast.web1.cpu", "fast.web2.cpu", "fast.web2.mem", "slow.db1.disk", "slow.db1.disk.sda",
         "slow.db2.disk", "tagged.m;env=prod"]


def index(config, names=NAMES):
    IndexStore(make_client("s3", config), config).add_names(names)


def graphite_store(finder):
    from django.conf import settings
    from graphite.storage import Store
    from graphite.tags.base import DummyTagDB

    return Store(finders=[finder], tagdb=DummyTagDB(settings))


@pytest.mark.moto
def test_finder_loads_from_turok_environment(monkeypatch, turok_config, tmp_path):
    from graphite.storage import get_finders

    monkeypatch.setenv("TUROK_INDEX_BUCKET", "from-env-bucket")
    monkeypatch.setenv("TUROK_AWS_ENDPOINT_URL", turok_config.aws_endpoint_url)
    (finder,) = get_finders("finder.TurokFinder")  # exactly how graphite-web builds it
    assert finder.config.index_bucket == "from-env-bucket"
    assert (finder.local, finder.disabled, finder.tags) == (True, False, False)
    assert finder.schemas.policy_for("anything").step == 10
    # DynamoDB clients (its block reads: a wide render's CPU) skip botocore's client-side
    # parameter walk; the others keep it
    from botocore.exceptions import ClientError, ParamValidationError

    too_short = ""  # botocore's walk would refuse an empty table name before sending it
    with pytest.raises(ClientError):  # sent: the server answers
        finder.blocks._client.describe_table(TableName=too_short)
    with pytest.raises(ParamValidationError):
        make_client("sqs", finder.config).receive_message(QueueUrl="http://127.0.0.1:9/q", MaxNumberOfMessages="ten")


@pytest.mark.moto
def test_find_nodes_through_graphite_store(setup):
    from graphite.node import LeafNode

    finder, _, config = setup
    index(config)
    store = graphite_store(finder)

    def found(pattern, **kwargs):
        return sorted((n.path, n.is_leaf) for n in store.find(pattern, **kwargs))

    assert found("*") == [("fast", False), ("slow", False)]  # tagged names are not a tree
    assert found("fast.*.cpu") == [("fast.web1.cpu", True), ("fast.web2.cpu", True)]
    assert found("fast.web{1,2}.{cpu,mem}") == [("fast.web1.cpu", True), ("fast.web2.cpu", True),
                                                ("fast.web2.mem", True)]
    assert found("slow.db[!1].*") == [("slow.db2.disk", True)]
    assert found("slow.db1.disk") == [("slow.db1.disk", False), ("slow.db1.disk", True)]
    assert found("slow.db1.*", leaves_only=True) == [("slow.db1.disk", True)]
    assert found("**.disk") == [("slow.db1.disk", False), ("slow.db1.disk", True), ("slow.db2.disk", True)]
    assert found("tagged.m;env=prod") == [("tagged.m;env=prod", True)]
    assert found("nothing.*") == []
    leaf = next(n for n in store.find("fast.web1.cpu"))
    assert isinstance(leaf, LeafNode) and leaf.reader.path == "fast.web1.cpu"
    intervals = leaf.intervals
    assert (intervals[0].start, intervals[0].end) == (NOW - 7 * 86400, NOW)  # the longest retention

    assert store.get_index() == sorted(NAMES)
    assert finder.get_index({}) == sorted(NAMES)


@pytest.mark.moto
def test_reads_align_exactly_like_whisper(setup, tmp_path):
    import whisper

    finder, blocks, config = setup
    index(config, ["fast.a"])
    path = str(tmp_path / "fast.a.wsp")
    whisper.create(path, [(10, 6 * 360), (60, 7 * 1440)])
    rng = random.Random(7)
    points = [(t, float(rng.randint(0, 1000))) for t in range(NOW - 6 * 3600 + 30, NOW, 10) if rng.random() < 0.8]
    whisper.update_many(path, points, now=NOW)
    blocks.write_slots(("fast.a", 10, t - t % 10, v) for t, v in points)
    reader = finder.reader("fast.a")
    cases = [(NOW - 3600, NOW), (NOW - 3605, NOW - 1201), (NOW - 600, NOW + 900), (NOW - 20, NOW - 20),
             (NOW - 19, NOW - 11), (NOW - 6 * 3600, NOW - 5 * 3600), (NOW - 6 * 3600 + 5, NOW), (NOW - 61, NOW - 60)]
    for start, end in cases:
        expected = whisper.fetch(path, start, end, now=NOW)
        got = reader.fetch(start, end, now=NOW)
        assert got[0] == expected[0], (start, end)
        assert got[1] == expected[1], (start, end)
        assert len(got[1]) == (got[0][1] - got[0][0]) // got[0][2]
    # a range older than the base retention answers from the 1-minute archive, as whisper does
    # (values: tests/turokd/test_whisper_parity.py, with turokd's rollups)
    assert reader.fetch(NOW - 7 * 3600, NOW - 5 * 3600, now=NOW)[0] == (
        whisper.fetch(path, NOW - 7 * 3600, NOW - 5 * 3600, now=NOW)[0])
    assert reader.fetch(NOW - 7 * 3600, NOW - 5 * 3600, now=NOW)[0][2] == 60
    # entirely in the future or beyond retention: nothing, as whisper
    assert whisper.fetch(path, NOW + 10, NOW + 20, now=NOW) is None
    assert reader.fetch(NOW + 10, NOW + 20, now=NOW) is None
    assert whisper.fetch(path, NOW - 8 * 86400, NOW - 7 * 86400 - 1, now=NOW) is None
    assert reader.fetch(NOW - 8 * 86400, NOW - 7 * 86400 - 1, now=NOW) is None
    # now defaults to the clock, end is capped at now
    assert reader.fetch(NOW - 60, NOW + 3600)[0] == (NOW - 60 - 7 + 10, NOW - 7 + 10, 10)


@pytest.mark.moto
def test_bulk_fetch_one_read_per_resolution_with_gaps(setup):
    finder, blocks, config = setup
    fast = [f"fast.host{i}.cpu" for i in range(40)]
    slow = [f"slow.host{i}.disk" for i in range(25)]
    index(config, fast + slow)
    start, end = NOW - 600, NOW
    blocks.write_slots((name, 10, t, float(i)) for i, name in enumerate(fast)
                       for t in range(SLOT - 600, SLOT + 10, 10) if t % 30)  # every third slot a gap
    blocks.write_slots((name, 60, t, 1.5) for name in slow for t in range(NOW - 600 - NOW % 60, NOW - NOW % 60, 60))

    blocks.batch_gets = 0  # the writes above read blocks too
    results = finder.fetch(["fast.*.cpu", "slow.host1*.disk", "fast.host1.cpu"], start, end, now=NOW)
    assert len(blocks.calls) == 2  # one block-store read per resolution for 51 series
    if not isinstance(blocks.store, MemoryBlockStore):
        assert blocks.batch_gets == 2  # ... each one BatchGetItem (≤ 100 block keys)
    assert sorted((c[1], len(c[0])) for c in blocks.calls) == [(10, 40), (60, 11)]
    by_key = {(r["pathExpression"], r["path"]): r for r in results}
    assert len(by_key) == 40 + 11 + 1
    first = by_key[("fast.*.cpu", "fast.host3.cpu")]
    assert first["name"] == "fast.host3.cpu"
    assert first["time_info"] == (NOW - 600 - 7 + 10, NOW - 7 + 10, 10)
    assert first["values"] == [None if t % 30 == 0 else 3.0 for t in range(NOW - 600 - 7 + 10, NOW + 3, 10)]
    slow_one = by_key[("slow.host1*.disk", "slow.host12.disk")]
    assert slow_one["time_info"] == (NOW - 600 - NOW % 60 + 60, NOW - NOW % 60 + 60, 60)
    assert slow_one["values"] == [1.5] * 9 + [None]  # the current minute is not written yet
    assert by_key[("fast.host1.cpu", "fast.host1.cpu")]["values"] == [
        None if t % 30 == 0 else 1.0 for t in range(NOW - 600 - 7 + 10, NOW + 3, 10)]


@pytest.mark.moto
def test_render_through_graphite_evaluator(setup, monkeypatch):
    import graphite.render.datalib as datalib
    from graphite.render.evaluator import evaluateTarget

    finder, blocks, config = setup
    index(config, ["fast.web1.cpu", "fast.web2.cpu", "fast.web3.cpu"])
    blocks.write_slots((f"fast.web{i}.cpu", 10, t, float(i)) for i in (1, 2) for t in range(SLOT - 300, SLOT + 10, 10))
    store = graphite_store(finder)
    monkeypatch.setattr(datalib, "STORE", store)
    calls_before = len(blocks.calls)

    def utc(epoch):
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC)

    context = {"startTime": utc(NOW - 120), "endTime": utc(NOW), "now": utc(NOW), "localOnly": False,
               "template": {}, "args": ([], {}), "xFilesFactor": 0}
    series = evaluateTarget(context, ["sumSeries(fast.*.cpu)", "fast.web1.cpu", "fast.web3.cpu"])
    assert len(blocks.calls) == calls_before + 1  # one bulk read for all three targets
    by_name = {s.name: s for s in series}
    total = by_name["sumSeries(fast.*.cpu)"]
    assert (total.start, total.end, total.step) == (NOW - 120 - 7 + 10, NOW - 7 + 10, 10)
    assert list(total) == [3.0] * 12
    assert list(by_name["fast.web1.cpu"]) == [1.0] * 12
    assert list(by_name["fast.web3.cpu"]) == [None] * 12  # indexed, never written: all gaps


@pytest.mark.moto
def test_series_by_tag_reads_every_series_found_in_one_bulk_read(setup, monkeypatch):
    """graphite-web resolves seriesByTag with finder.TurokTagDB, then the finder reads all the
    series found at once, as for a glob; graphite's tag functions compute on them."""
    import graphite.render.datalib as datalib
    import graphite.render.functions as functions
    from django.conf import settings
    from graphite.render.evaluator import evaluateTarget
    from graphite.storage import Store

    from finder import TurokTagDB
    from turok_core.index.tag_cache import TagCache, make_tag_store

    finder, blocks, config = setup
    tagged = [f"fast.disk;dc={dc};host=h{i}" for i, dc in enumerate(["eu", "eu", "us"])] + ["fast.cpu;dc=eu;host=h0"]
    index(config, tagged)
    make_tag_store(make_client("s3", config), config).add_names(tagged)
    blocks.write_slots((name, 10, t, float(i + 1)) for i, name in enumerate(tagged)
                       for t in range(SLOT - 300, SLOT + 10, 10))
    tagdb = TurokTagDB(settings, config=config, index=TagCache(make_client("s3", config), config))
    store = Store(finders=[finder], tagdb=tagdb)
    monkeypatch.setattr(datalib, "STORE", store)
    monkeypatch.setattr(functions, "STORE", store)
    calls_before = len(blocks.calls)

    def utc(epoch):
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC)

    context = {"startTime": utc(NOW - 120), "endTime": utc(NOW), "now": utc(NOW), "localOnly": False,
               "template": {}, "args": ([], {}), "xFilesFactor": 0}
    series = evaluateTarget(context, ["seriesByTag('name=fast.disk')",
                                      "groupByTags(seriesByTag('name=fast.disk'),'sum','dc')",
                                      "aliasByTags(seriesByTag('dc=eu','host=~h0'),'name')"])
    assert len(blocks.calls) == calls_before + 1  # every series of every seriesByTag in one read
    by_name = {s.name: list(s) for s in series}
    assert by_name == {
        "fast.disk;dc=eu;host=h0": [1.0] * 12, "fast.disk;dc=eu;host=h1": [2.0] * 12,
        "fast.disk;dc=us;host=h2": [3.0] * 12,
        "fast.disk;dc=eu": [3.0] * 12, "fast.disk;dc=us": [3.0] * 12,
        "fast.cpu": [4.0] * 12, "fast.disk": [1.0] * 12}


@pytest.mark.processes
def test_graphite_settings_module(tmp_path):
    """graphite-web's settings with ours, in fresh processes (Django settings are per process)."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT
    from turok_core.dev.stack import prepare_graphite_storage

    script = ("import json, django; django.setup(); from django.conf import settings as s; "
              "print(json.dumps([s.SECRET_KEY, list(s.STORAGE_FINDERS), s.CARBONLINK_HOSTS, s.LOG_DIR, "
              "s.DATABASES['default']['NAME'], s.CLUSTER_SERVERS, s.TAGDB]))")

    def load(**extra):
        env = {k: v for k, v in os.environ.items() if k != "TUROK_GRAPHITE_SECRET_KEY"}
        env.update(DJANGO_SETTINGS_MODULE="graphite.settings",
                   GRAPHITE_SETTINGS_MODULE="turok_core.dev.graphite_settings",
                   GRAPHITE_STORAGE_DIR=str(tmp_path / "storage"), PYTHONPATH=str(ROOT), **extra)
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    prepare_graphite_storage(tmp_path / "storage")  # the launcher's part, before graphite-web starts
    key, finders, carbonlink, log_dir, database, cluster, tagdb = load()
    assert finders == ["finder.TurokFinder"] and carbonlink == [] and cluster == []
    assert tagdb == "finder.TurokTagDB"  # seriesByTag and /tags* from Turok's tag index
    assert len(key) > 40 and key != "UNSAFE_DEFAULT"
    prepare_graphite_storage(tmp_path / "storage")
    assert load()[0] == key  # generated once per install, then kept
    assert oct((tmp_path / "storage" / "secret_key").stat().st_mode & 0o777) == "0o600"
    assert log_dir == str(tmp_path / "storage" / "log" / "webapp")
    assert (tmp_path / "storage" / "log" / "webapp" / "info.log").exists()
    assert database == str(tmp_path / "storage" / "graphite.db")
    assert load(TUROK_GRAPHITE_SECRET_KEY="from-the-environment")[0] == "from-the-environment"
