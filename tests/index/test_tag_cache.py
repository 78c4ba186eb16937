"""TagCache: a revalidation that finds some shards changed updates the loaded TagIndex with those
shards' series only (no rebuild, the built posting lists kept), answering as a fresh copy."""
import pytest

from tests.index.test_s3_cache import ManualClock
from tests.index.test_tag_index_updates import answers
from turok_core.index.tag_cache import TagCache, make_tag_store
from turok_core.index.tag_index import TagIndex
from turok_core.runtime.aws import make_client

pytestmark = pytest.mark.moto


def test_a_changed_shard_updates_the_copy_without_a_rebuild(turok_config, monkeypatch):
    config = turok_config.replace(tag_index_shards=4, index_refresh_seconds=5.0)
    store = make_tag_store(make_client("s3", config), config)
    series = [f"disk.used;dc={dc};host=h{host}" for dc in ("eu", "us") for host in range(40)]
    store.add_names(series)
    clock = ManualClock()
    cache = TagCache(make_client("s3", config), config, clock=clock)
    for _ in range(2):  # the first query scans dc and host, the second builds their lists
        assert cache.tag_index.find_series(["dc=eu", "host=~h1"]) == sorted(
            f"disk.used;dc=eu;host=h{host}" for host in range(40) if str(host).startswith("1"))
    built = []
    original = TagIndex._build
    monkeypatch.setattr(TagIndex, "_build", lambda self, tag: built.append(tag) or original(self, tag))

    store.add_names(["disk.used;dc=ap;host=h1"])
    clock.now += 10
    assert cache.tag_index.find_series(["dc=~a|e", "host=~h1"]) == sorted(
        ["disk.used;dc=ap;host=h1"] + [f"disk.used;dc=eu;host=h{host}" for host in range(40)
                                       if str(host).startswith("1")])
    assert (cache.rebuilds, cache.updates) == (1, 1)
    assert built == []  # dc's and host's lists updated, not built again

    store.remove_names(["disk.used;dc=us;host=h7", "disk.used;dc=eu;host=h7"])
    store.add_names(["disk.free;dc=us;host=h7"])
    clock.now += 10
    assert cache.tag_index.find_series(["host=h7"]) == ["disk.free;dc=us;host=h7"]
    assert (cache.rebuilds, cache.updates) == (1, 2)
    assert built == []
    fresh = TagCache(make_client("s3", config), config, clock=clock)
    assert answers(cache.tag_index, 3) == answers(fresh.tag_index, 3)
    assert fresh.rebuilds == 1


def test_a_failed_update_builds_the_copy_anew(turok_config, monkeypatch):
    config = turok_config.replace(tag_index_shards=4, index_refresh_seconds=5.0)
    store = make_tag_store(make_client("s3", config), config)
    store.add_names(["a;x=1", "b;x=2"])
    clock = ManualClock()
    cache = TagCache(make_client("s3", config), config, clock=clock)
    assert cache.tag_index.find_series(["x=~."]) == ["a;x=1", "b;x=2"]

    def broken(self, removed, added):
        raise RuntimeError("a bug")

    monkeypatch.setattr(TagIndex, "updated", broken)
    store.add_names(["c;x=3"])
    clock.now += 10
    assert cache.tag_index.find_series(["x=~."]) == ["a;x=1", "b;x=2", "c;x=3"]
    assert (cache.rebuilds, cache.updates, cache.refresh_errors) == (2, 0, 0)
