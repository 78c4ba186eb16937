"""IndexStore's S3 side: the manifest, the objects' layout and bytes (what every store does:
test_index_store_contract.py)."""
import json

import pytest

from turok_core.index.s3_store import IndexStore
from turok_core.index.shards import decode_shard_object, shard_of
from turok_core.runtime.aws import make_client

pytestmark = pytest.mark.moto


def s3_objects(config):
    s3 = make_client("s3", config)
    listing = s3.list_objects_v2(Bucket=config.index_bucket, Prefix=config.index_prefix)
    return {item["Key"]: item for item in listing.get("Contents", [])}


def test_add_names_creates_manifest_and_shards(turok_config):
    config = turok_config.replace(index_shards=8)
    s3 = make_client("s3", config)
    store = IndexStore(s3, config)
    names = [f"host{i}.cpu.user" for i in range(40)] + ["a.b;k=v", "bad..name", ""]
    stats = store.add_names(names + names[:5])
    assert (stats.names, stats.added, stats.rejected) == (41, 41, 2)
    touched = {shard_of(n, 8) for n in names if n and ".." not in n}
    assert stats.shard_writes == len(touched) and stats.conflicts == 0

    objects = s3_objects(config)
    manifest = json.loads(s3.get_object(Bucket=config.index_bucket, Key="index/manifest.json")["Body"].read())
    assert manifest == {"version": 1, "shards": 8}
    assert set(objects) == {"index/manifest.json"} | {f"index/shards-8/{s:05d}.gz" for s in touched}
    stored = set()
    for key in objects:
        if key.endswith(".gz"):
            shard_names, _ = decode_shard_object(s3.get_object(Bucket=config.index_bucket, Key=key)["Body"].read())
            assert shard_names == sorted(shard_names)
            assert {shard_of(n, 8) for n in shard_names} == {int(key[-8:-3])}
            stored.update(shard_names)
    assert stored == set(names) - {"bad..name", ""}

    again = store.add_names(names[:10])  # nothing new: no PUT at all
    assert (again.added, again.shard_writes) == (0, 0) and again.shards_unchanged > 0


def test_manifest_shard_count_wins_over_config(turok_config):
    s3 = make_client("s3", turok_config)
    IndexStore(s3, turok_config.replace(index_shards=4)).add_names(["a.b"])
    later = IndexStore(s3, turok_config.replace(index_shards=32))
    assert later.shard_count() == 4
    later.add_names(["c.d"])
    assert all("/shards-4/" in key for key in s3_objects(turok_config) if key.endswith(".gz"))
