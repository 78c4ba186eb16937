"""finder.TurokTagDB in-process: over the tag index on S3 (moto), against graphite-web's own
LocalDatabaseTagDB (sqlite) told the same series, on random tag sets and many queries; its copy
is revalidated; writes accept the series Turok has and refuse the others."""
from __future__ import annotations

import random

import pytest

from tests.index.test_tag_index_reference import random_expression, random_series
from turok_core.index.tag_cache import TagCache, make_tag_store
from turok_core.runtime.aws import make_client

pytestmark = pytest.mark.moto


@pytest.fixture(scope="module")
def reference_db(graphite_django):
    """graphite-web's stock TagDB on a migrated sqlite database of this test session."""
    from django.conf import settings
    from django.core.management import call_command
    from graphite.tags.localdatabase import LocalDatabaseTagDB

    call_command("migrate", verbosity=0, interactive=False)
    return LocalDatabaseTagDB(settings)


def turok_tagdb(config, series, refresh_seconds=60.0):
    from django.conf import settings

    from finder.tagdb import TurokTagDB

    config = config.replace(tag_index_shards=4)
    make_tag_store(make_client("s3", config), config).add_names(series)
    cache = TagCache(make_client("s3", config), config.replace(index_refresh_seconds=refresh_seconds))
    return TurokTagDB(settings, config=config, index=cache)


def without_ids(answer):
    if isinstance(answer, list):
        return [without_ids(item) for item in answer]
    if isinstance(answer, dict):
        return {key: without_ids(value) for key, value in answer.items() if key != "id"}
    return answer


def same(ours, theirs):
    """Call both; equal answers, or the same kind of error with the same message."""
    try:
        expected = without_ids(theirs())
    except Exception as exc:  # noqa: BLE001 - whatever graphite raises, we must raise alike
        with pytest.raises(type(exc)) as raised:
            ours()
        assert str(raised.value) == str(exc)
        return
    assert ours() == expected


def test_every_query_answers_as_graphite_webs_own_tagdb(turok_config, reference_db):
    from graphite.tags.models import Series

    Series.objects.all().delete()
    rnd = random.Random(14)
    series = random_series(rnd, 400)
    turok = turok_tagdb(turok_config, series)
    reference_db.tag_multi_series(series)
    tags = ["dc", "host", "role", "env", "name", "nosuch"]
    for tag in tags:
        same(lambda: turok.get_tag(tag), lambda: reference_db.get_tag(tag))
        for value_filter, limit in [("a", None), ("^d", "1"), (None, "2"), ("e.", None)]:
            same(lambda: turok.list_values(tag, value_filter, limit),
                 lambda: reference_db.list_values(tag, value_filter, limit))
    for tag_filter, limit in [(None, None), ("d|e", None), ("^h", "1"), (".*", "3")]:
        same(lambda: turok.list_tags(tag_filter, limit), lambda: reference_db.list_tags(tag_filter, limit))
    for _ in range(200):
        exprs = [random_expression(rnd) for _ in range(rnd.randint(1, 3))]
        same(lambda: turok.find_series(exprs), lambda: reference_db.find_series(exprs))
        prefix, limit = rnd.choice([None, "", "d", "e", "r"]), rnd.choice([None, 1, 3, 10000])
        same(lambda: turok.auto_complete_tags(exprs, prefix, limit),
             lambda: reference_db.auto_complete_tags(exprs, prefix, limit))
        tag = rnd.choice(tags)
        same(lambda: turok.auto_complete_values(exprs, tag, prefix, limit),
             lambda: reference_db.auto_complete_values(exprs, tag, prefix, limit))
    for tag in tags:  # Grafana's first calls: no expression yet
        same(lambda: turok.auto_complete_values([], tag, "a", 10),
             lambda: reference_db.auto_complete_values([], tag, "a", 10))
        same(lambda: turok.auto_complete_tags([], tag[:1], 10),
             lambda: reference_db.auto_complete_tags([], tag[:1], 10))


def test_new_series_appear_once_the_copy_is_revalidated(turok_config, graphite_django):
    turok = turok_tagdb(turok_config, ["a.b;x=1"], refresh_seconds=0)
    assert turok.find_series(["x=~."]) == ["a.b;x=1"]
    make_tag_store(make_client("s3", turok_config), turok_config.replace(tag_index_shards=4)).add_names(["a.b;x=2"])
    assert turok.find_series(["x=~."]) == ["a.b;x=1", "a.b;x=2"]
    assert turok.get_series("a.b;x=2").tags == {"name": "a.b", "x": "2"}
    assert turok.get_series("a.b;x=3") is None


def test_writes_accept_known_series_and_refuse_the_rest(turok_config, graphite_django):
    from graphite.util import HttpError

    turok = turok_tagdb(turok_config, ["cpu;dc=eu;host=a"])
    assert turok.tag_series("cpu;host=a;dc=eu") == "cpu;dc=eu;host=a"  # normalised as graphite does
    with pytest.raises(HttpError, match="send points for them.*cpu;host=b") as refused:
        turok.tag_multi_series(["cpu;host=a;dc=eu", "cpu;host=b"])
    assert refused.value.status == 400
    assert turok.del_multi_series(["cpu;host=b"]) is True  # nothing to delete
    with pytest.raises(HttpError, match="when its data expires"):
        turok.del_series("cpu;dc=eu;host=a")
    assert turok.find_series(["name=cpu"]) == ["cpu;dc=eu;host=a"]
