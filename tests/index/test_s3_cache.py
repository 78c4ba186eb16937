"""IndexCache: the finder's copy of the S3 index, revalidated by ETag, answering through S3 outages."""

import pytest

from turok_core.index.names import Match
from turok_core.index.s3_cache import IndexCache
from turok_core.index.s3_store import IndexStore
from turok_core.index.shards import shard_of
from turok_core.runtime.aws import make_client

pytestmark = pytest.mark.moto


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def s3_objects(config):
    s3 = make_client("s3", config)
    listing = s3.list_objects_v2(Bucket=config.index_bucket, Prefix=config.index_prefix)
    return {item["Key"]: item for item in listing.get("Contents", [])}


def test_cache_revalidates_with_etags_and_sees_new_names(turok_config):
    config = turok_config.replace(index_shards=4, index_refresh_seconds=5.0)
    s3 = make_client("s3", config)
    store = IndexStore(s3, config)
    names = [f"servers.web{i}.cpu" for i in range(20)]
    store.add_names(names)
    objects = 1 + len({shard_of(n, 4) for n in names})  # manifest and the shards that exist
    clock = ManualClock()
    cache = IndexCache(make_client("s3", config), config, clock=clock)

    assert [m.path for m in cache.match("servers.web1*.cpu")] == [
        f"servers.web{i}.cpu" for i in range(1, 20) if str(i).startswith("1")]
    assert (cache.downloads, cache.not_modified, cache.rebuilds) == (objects, 0, 1)
    name_list = cache.name_list

    clock.now += 1  # within the refresh period: no request at all
    assert cache.names() == sorted(f"servers.web{i}.cpu" for i in range(20))
    assert (cache.downloads, cache.not_modified) == (objects, 0)

    clock.now += 10  # due: every object revalidated, all 304, same tree
    assert cache.match("servers.web3.cpu") == [Match("servers.web3.cpu", True)]
    assert (cache.downloads, cache.not_modified, cache.rebuilds) == (objects, objects, 1)
    assert cache.name_list is name_list

    new_shard = shard_of("servers.db1.cpu", 4)
    store.add_names(["servers.db1.cpu"])  # one shard changes (or appears)
    assert cache.match("servers.db*.cpu") == []  # not due yet
    clock.now += 10
    assert cache.match("servers.db*.cpu") == [Match("servers.db1.cpu", True)]
    existed = any(shard_of(n, 4) == new_shard for n in names)
    assert (cache.downloads, cache.not_modified, cache.rebuilds) == (
        objects + 1, 2 * objects - 1 if existed else 2 * objects, 2)


def test_cache_without_an_index_is_empty_and_creates_nothing(turok_config):
    cache = IndexCache(make_client("s3", turok_config), turok_config)
    assert cache.names() == [] and cache.match("**") == []
    assert s3_objects(turok_config) == {}


def test_cache_keeps_answering_when_s3_fails_after_the_first_load(turok_config):
    config = turok_config.replace(index_refresh_seconds=5.0)
    IndexStore(make_client("s3", config), config).add_names(["a.b.c"])

    class Flaky:
        def __init__(self, client):
            self.client, self.broken = client, False

        def get_object(self, **kwargs):
            if self.broken:
                raise ConnectionError("S3 is away")
            return self.client.get_object(**kwargs)

    flaky = Flaky(make_client("s3", config))
    clock = ManualClock()
    cache = IndexCache(flaky, config, clock=clock)
    assert cache.names() == ["a.b.c"]
    flaky.broken = True
    clock.now += 10
    assert cache.match("a.*.c") == [Match("a.b.c", True)] and cache.refresh_errors == 1
    assert cache.names() == ["a.b.c"] and cache.refresh_errors == 1  # not retried before the period
    flaky.broken = False
    IndexStore(make_client("s3", config), config).add_names(["a.d.c"])
    clock.now += 10
    assert [m.path for m in cache.match("a.*.c")] == ["a.b.c", "a.d.c"]

    cold = IndexCache(Flaky(make_client("s3", config)), config)
    cold._s3.broken = True
    with pytest.raises(ConnectionError):  # no copy yet: the caller (graphite-web) sees the error
        cold.names()
