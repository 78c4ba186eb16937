"""The finder's and the TagDB's copies of the S3 indexes before, during and after a move to more
shards: they answer what a copy built from scratch of the same names answers, including a move
that starts, switches and deletes the old layout in the middle of one refresh."""
from __future__ import annotations

import pytest

from tests.support.index_moves import Stop, stopping_after
from turok_core.index.names import NameList
from turok_core.index.reshard import move_shards
from turok_core.index.s3_cache import IndexCache
from turok_core.index.s3_store import IndexStore
from turok_core.index.tag_cache import TagCache, make_tag_store, tagged
from turok_core.index.tag_index import TagIndex
from turok_core.runtime.aws import make_client

pytestmark = pytest.mark.moto

EXPRESSIONS = (["dc=eu"], ["name=disk.used"], ["host=~h1.*"], ["dc!=eu", "name=~disk.*"], ["host=h7", "dc="])


def names_of(count: int, prefix: str) -> set[str]:
    return {f"{prefix}.host{i}.cpu" for i in range(count)} | {
        f"disk.{'used' if i % 2 else 'free'};dc={'eu' if i % 3 else 'us'};host=h{i};run={prefix}" for i in range(count)}


def assert_answers_like_a_fresh_copy(names: IndexCache, tags: TagCache, expected: set[str]) -> None:
    assert names.names() == NameList(expected).names()
    assert [m.path for m in names.match("*.host1*.cpu")] == [m.path for m in NameList(expected).match("*.host1*.cpu")]
    fresh = TagIndex(expected)
    index = tags.tag_index
    assert index.series() == fresh.series()
    for expressions in EXPRESSIONS:
        assert index.find_series(expressions) == fresh.find_series(expressions), expressions
    assert index.list_tags() == fresh.list_tags()
    assert index.list_values("host") == fresh.list_values("host")


def stores(config):
    s3 = make_client("s3", config)
    return IndexStore(s3, config), make_tag_store(s3, config)


def add_and_remove(config, added=(), removed=()):
    for store in stores(config):
        store.add_names(tagged(added) if store.layout.prefix == config.tag_index_prefix else added)
        store.remove_names(tagged(removed) if store.layout.prefix == config.tag_index_prefix else removed)


def test_copies_answer_like_fresh_ones_before_during_and_after_a_move(turok_config):
    config = turok_config.replace(index_shards=4, tag_index_shards=4, index_refresh_seconds=0)
    expected = names_of(40, "a")
    add_and_remove(config, expected)
    names, tags = IndexCache(make_client("s3", config), config), TagCache(make_client("s3", config), config)
    assert_answers_like_a_fresh_copy(names, tags, expected)
    for store in stores(config):  # both moves stop half way: two old shards sealed, one's new shards made
        with pytest.raises(Stop):
            move_shards(stopping_after(store, 1 + 4 + 1), to=16)
    added, removed = names_of(8, "b"), {name for name in expected if "host1" in name}
    add_and_remove(config, added, removed)
    expected = expected - removed | added
    assert_answers_like_a_fresh_copy(names, tags, expected)  # during: both layouts read
    assert_answers_like_a_fresh_copy(IndexCache(make_client("s3", config), config),
                                     TagCache(make_client("s3", config), config), expected)
    updates, rebuilds = tags.updates, tags.rebuilds
    for store in stores(config):
        move_shards(store)  # finished by the next mover
    add_and_remove(config, removed=["b.host3.cpu", "disk.used;dc=eu;host=h5;run=b"])
    expected -= {"b.host3.cpu", "disk.used;dc=eu;host=h5;run=b"}
    assert_answers_like_a_fresh_copy(names, tags, expected)  # after: the new layout only
    assert {layout for layout, _ in names._objects} == {16} == {layout for layout, _ in tags._objects}
    assert (tags.updates, tags.rebuilds) == (updates + 1, rebuilds)  # the switch updated the copy in place


class MovesDuringARead:
    """An S3 client on which the first GET of a shard object first runs ``move`` whole (seal,
    copy, switch, delete): a move that happens while a reader is between its reads."""

    def __init__(self, client, move):
        self.client, self.move = client, move

    def get_object(self, **kwargs):
        if "/shards-" in kwargs["Key"] and self.move is not None:
            move, self.move = self.move, None
            move()
        return self.client.get_object(**kwargs)


def test_a_move_that_switches_during_a_refresh_is_read_again(turok_config):
    config = turok_config.replace(index_shards=4, tag_index_shards=4, index_refresh_seconds=0)
    expected = names_of(40, "a")
    add_and_remove(config, expected)
    name_store, tag_store = stores(config)
    s3 = make_client("s3", config)
    names = IndexCache(MovesDuringARead(s3, lambda: move_shards(IndexStore(s3, config), to=16)), config)
    tags = TagCache(MovesDuringARead(s3, lambda: move_shards(make_tag_store(s3, config), to=16)), config)
    assert_answers_like_a_fresh_copy(names, tags, expected)  # the old shards it read after the move were gone
    assert names.manifest_checks >= 1 and tags.manifest_checks >= 1
    assert name_store.manifest(fresh=True).shards == 16 == tag_store.manifest(fresh=True).shards


def test_the_move_command_moves_either_index_and_refuses_a_bad_count(turok_config, tmp_path, capsys):
    from turok_core.dev.stack import write_config
    from turok_core.index.reshard import main

    config = turok_config.replace(index_shards=4, tag_index_shards=4)
    write_config(config, tmp_path / "turok.conf")
    add_and_remove(config, names_of(10, "a"))
    argv = ["--config", str(tmp_path / "turok.conf")]
    assert main(argv + ["--tags", "--to", "16"]) == 0
    assert "now has 16 shards" in capsys.readouterr().out
    name_store, tag_store = stores(config)
    assert (name_store.shard_count(), tag_store.shard_count()) == (4, 16)
    assert main(argv + ["--to", "6"]) == 1 and "not a multiple" in capsys.readouterr().err
    assert main(argv) == 0 and name_store.manifest(fresh=True).shards == 4  # nothing in progress: nothing moves
