"""TagIndex answers graphite-web's tag queries: each operator, anchoring, empty values, listing."""
import pytest

from turok_core.index.tag_index import NO_NON_EMPTY, TagIndex, parse_expression

SERIES = [
    "disk.used;dc=eu;host=a",
    "disk.used;dc=eu;host=ab",
    "disk.used;dc=us;host=xa",
    "disk.used;host=b",
    "disk.free;dc=eu;host=a",
    "cpu;dc=eu;host=a;role=db",
    "~cpu;host=t",
    "plain.untagged.name",  # not a tagged series: not in the tag index
]


@pytest.fixture(scope="module")
def index():
    return TagIndex(SERIES)


def test_untagged_names_are_left_out_and_the_rest_sorted(index):
    assert index.series() == sorted(s for s in SERIES if ";" in s)
    assert len(TagIndex(SERIES + SERIES)) == len(index)


@pytest.mark.parametrize("exprs, expected", [
    (["name=disk.used"], ["disk.used;dc=eu;host=a", "disk.used;dc=eu;host=ab", "disk.used;dc=us;host=xa",
                          "disk.used;host=b"]),
    (["dc=eu"], ["cpu;dc=eu;host=a;role=db", "disk.free;dc=eu;host=a", "disk.used;dc=eu;host=a",
                 "disk.used;dc=eu;host=ab"]),
    (["name=disk.used", "dc!=eu"], ["disk.used;dc=us;host=xa", "disk.used;host=b"]),
    (["name=disk.used", "dc="], ["disk.used;host=b"]),  # '=' with no value: series without the tag
    (["dc!="], ["cpu;dc=eu;host=a;role=db", "disk.free;dc=eu;host=a", "disk.used;dc=eu;host=a",
                "disk.used;dc=eu;host=ab", "disk.used;dc=us;host=xa"]),
    (["name=disk.used", "host=~a"], ["disk.used;dc=eu;host=a", "disk.used;dc=eu;host=ab"]),  # anchored at start
    (["name=disk.used", "host=~.*a"], ["disk.used;dc=eu;host=a", "disk.used;dc=eu;host=ab",
                                       "disk.used;dc=us;host=xa"]),
    (["name=disk.used", "host!=~a"], ["disk.used;dc=us;host=xa", "disk.used;host=b"]),
    (["name=~disk", "role=~.*"], ["disk.free;dc=eu;host=a", "disk.used;dc=eu;host=a", "disk.used;dc=eu;host=ab",
                                  "disk.used;dc=us;host=xa", "disk.used;host=b"]),  # '.*' matches absent too
    (["name=cpu"], ["cpu;dc=eu;host=a;role=db", "~cpu;host=t"]),  # graphite strips the name's '~'
    (["name=nothing"], []),
    (["nosuchtag=x"], []),
])
def test_find_series(index, exprs, expected):
    assert index.find_series(exprs) == expected


@pytest.mark.parametrize("exprs", [["dc="], ["dc!=eu"], ["host=~.*"], ["dc!=~eu"], ["role=", "dc!=us"]])
def test_an_expression_that_is_not_empty_matching_is_required(index, exprs):
    with pytest.raises(ValueError, match=NO_NON_EMPTY):
        index.find_series(exprs)


@pytest.mark.parametrize("text", ["dc", "=eu", "d;c=eu", "dc=e;u", "d!c=eu"])
def test_invalid_expressions_are_refused(text):
    with pytest.raises(ValueError, match="Invalid tagspec"):
        parse_expression(text)


def test_list_tags_and_values(index):
    assert [t["tag"] for t in index.list_tags()] == ["dc", "host", "name", "role"]
    assert [t["tag"] for t in index.list_tags("^(h)")] == ["host"]
    assert [t["tag"] for t in index.list_tags(limit="2")] == ["dc", "host"]
    assert index.list_values("dc") == [{"value": "eu", "count": 4}, {"value": "us", "count": 1}]
    assert index.list_values("host", "a") == [{"value": "a", "count": 3}, {"value": "ab", "count": 1}]
    assert index.list_values("name", limit=1) == [{"value": "cpu", "count": 2}]
    assert index.get_tag("role") == {"tag": "role", "values": [{"value": "db", "count": 1}]}
    assert index.get_tag("nosuchtag") is None
    assert index.list_values("nosuchtag") == []


def test_an_empty_index_answers_nothing():
    empty = TagIndex([])
    assert empty.list_tags() == [] and empty.find_series(["a=b"]) == [] and empty.get_tag("name") is None
