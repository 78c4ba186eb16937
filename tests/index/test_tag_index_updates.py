"""TagIndex.updated against a TagIndex built from scratch: random shard changes applied one after
the other to a copy whose tags queries have scanned and built, every answer compared."""
import random

import pytest

from tests.index.test_tag_index_reference import TAGS, random_expression, random_series
from turok_core.index.shards import shard_of
from turok_core.index.tag_index import TagIndex

SHARDS = 8
QUERIED = sorted(TAGS) + ["name", "nosuch"]


def answers(index, rnd_seed):
    """Every kind of answer the TagDB gives, on queries drawn from ``rnd_seed``."""
    rnd = random.Random(rnd_seed)
    found = {"len": len(index), "series": index.series(), "tags": index.list_tags(),
             "filtered tags": [index.list_tags(f, limit) for f, limit in [("d|e", None), ("^h", "1"), (".*", 3)]]}
    for tag in QUERIED:
        found[f"tag {tag}"] = index.get_tag(tag)
        found[f"values {tag}"] = [index.list_values(tag, f, limit)
                                  for f, limit in [("a", None), ("^d", "1"), (None, 2)]]
    for at in range(60):
        exprs = [random_expression(rnd) for _ in range(rnd.randint(1, 3))]
        try:
            found[f"find {at} {exprs}"] = index.find_series(exprs)
        except ValueError as exc:
            found[f"find {at} {exprs}"] = str(exc)
            continue
        prefix, limit = rnd.choice([None, "", "d", "e", "r", "a"]), rnd.choice([1, 3, 10000])
        found[f"tags {at}"] = index.auto_complete_tags(exprs, prefix, limit)
        found[f"values {at}"] = index.auto_complete_values(exprs, rnd.choice(QUERIED), prefix, limit)
    for tag in QUERIED:
        found[f"no expr {tag}"] = (index.auto_complete_values([], tag, "a", 10),
                                   index.auto_complete_tags([], tag[:1], 10))
    return found


def change_shards(rnd, shards, pool):
    """New versions of a few shards: some series removed, some from ``pool`` added; per changed
    shard (old names, new names), as TagCache's refresh sees them."""
    changes = []
    for shard in rnd.sample(range(SHARDS), rnd.choice([1, 1, 2, 3])):
        old = shards[shard]
        new = {name for name in old if rnd.random() > rnd.choice([0.0, 0.05, 0.3, 1.0])}
        new.update(name for name in rnd.sample(pool, rnd.randint(0, 12)) if shard_of(name, SHARDS) == shard)
        shards[shard] = sorted(new)
        changes.append((old, shards[shard]))
    return changes


@pytest.mark.parametrize("seed", range(8))
def test_incremental_updates_answer_as_a_copy_built_from_scratch(seed):
    rnd = random.Random(seed)
    pool = random_series(rnd, 600)
    shards = {shard: [] for shard in range(SHARDS)}
    for name in rnd.sample(pool, rnd.choice([0, 50, 300])):
        shards[shard_of(name, SHARDS)].append(name)
    shards = {shard: sorted(names) for shard, names in shards.items()}
    index = TagIndex([name for names in shards.values() for name in names], from_tag_index=True)
    updates = rebuilds = 0
    for step in range(25):
        answers(index, rnd.randrange(10**6))  # builds and scans some tags, keeps sorted values
        removed, added = [], []
        for old, new in change_shards(rnd, shards, pool):
            removed += sorted(set(old) - set(new))
            added += sorted(set(new) - set(old))
        scratch = TagIndex([name for names in shards.values() for name in names], from_tag_index=True)
        before = answers(index, 1)
        updated = index.updated(removed, added)
        assert answers(index, 1) == before  # the old copy is left as it was
        if updated is None:  # too many holes: built anew, as TagCache does
            rebuilds += 1
            updated = scratch
        else:
            updates += 1
        seed_of_queries = rnd.randrange(10**6)
        assert answers(updated, seed_of_queries) == answers(scratch, seed_of_queries), step
        index = updated
    assert updates >= 10


def test_an_update_keeps_the_built_lists_and_rebuilds_none():
    series = [f"disk.used;dc={dc};host=h{host}" for dc in ("eu", "us") for host in range(50)]
    index = TagIndex(series, from_tag_index=True)
    assert len(index.find_series(["dc=eu"])) == 50
    assert len(index.find_series(["dc=eu"])) == 50  # the second query built dc's lists
    index.list_values("host")
    built = dict(index._postings)

    def no_build(tag):
        raise AssertionError(f"{tag} rebuilt")

    updated = index.updated(["disk.used;dc=eu;host=h3"], ["disk.used;dc=ap;host=h3", "disk.free;dc=eu;host=h9"])
    updated._build = no_build
    assert updated.find_series(["dc=eu", "host=h3"]) == []
    assert updated.find_series(["dc=ap"]) == ["disk.used;dc=ap;host=h3"]
    assert updated.find_series(["host=h9"]) == ["disk.free;dc=eu;host=h9", "disk.used;dc=eu;host=h9",
                                                "disk.used;dc=us;host=h9"]
    assert updated.list_values("dc") == [{"value": "ap", "count": 1}, {"value": "eu", "count": 50},
                                         {"value": "us", "count": 50}]
    assert updated._postings["dc"]["us"] is built["dc"]["us"]  # unchanged lists shared, not copied
    assert "disk.used;dc=eu;host=h3" not in updated and "" not in updated
    assert "disk.used;dc=eu;host=h3" in index  # the old copy still answers as before


def test_an_update_past_the_holes_limit_asks_for_a_rebuild():
    series = [f"a;x={i}" for i in range(8)]
    index = TagIndex(series, from_tag_index=True)
    assert index.updated(series[:2], []) is not None
    assert index.updated(series[:3], []) is None


def test_a_tag_leaves_with_its_last_series():
    index = TagIndex(["a;x=1", "a;x=2;rare=r", "b;x=1"], from_tag_index=True)
    assert [t["tag"] for t in index.list_tags()] == ["name", "rare", "x"]
    index.list_values("rare"), index.list_values("x")  # built: the update knows whether any series keeps them
    updated = index.updated(["a;x=2;rare=r"], ["c;x=3"])
    assert [t["tag"] for t in updated.list_tags()] == ["name", "x"]
    assert updated.get_tag("rare") is None
    assert updated.updated(["a;x=1", "b;x=1", "c;x=3"], []) is None  # past the holes limit
    emptied = TagIndex(["a;x=1"], from_tag_index=True).updated([], []).updated(["a;x=1"], [])
    assert emptied is None
