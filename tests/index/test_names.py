"""NameList: Graphite globs over the sorted name list (the reference comparison: test_names_reference.py)."""
import pytest

from turok_core.index.names import Match, NameList

NAMES = [
    "servers.web1.cpu.user",
    "servers.web1.cpu.system",
    "servers.web2.cpu.user",
    "servers.web10.cpu.user",
    "servers.db1.disk.sda.reads",
    "servers.db1.disk",  # a leaf that is also a branch
    "apps.api.requests",
    "apps.api.latency.p99",
    "a.b.c",
    "a.x.b.c",
    "a.x.y.b.c",
    "tagged.metric;env=prod;host=a.b",
]


@pytest.fixture(scope="module")
def name_list():
    return NameList(NAMES)


def paths(matches, leaf=None):
    return sorted(m.path for m in matches if leaf is None or m.is_leaf == leaf)


def test_literal_and_star_never_crosses_a_dot(name_list):
    assert name_list.match("servers.web1.cpu.user") == [Match("servers.web1.cpu.user", True)]
    assert paths(name_list.match("servers.*")) == ["servers.db1", "servers.web1", "servers.web10", "servers.web2"]
    assert paths(name_list.match("servers.*.cpu.user")) == [
        "servers.web1.cpu.user", "servers.web10.cpu.user", "servers.web2.cpu.user"]
    assert name_list.match("servers.*.user") == []
    assert paths(name_list.match("servers.web*")) == ["servers.web1", "servers.web10", "servers.web2"]
    assert name_list.match("servers.nope.*") == []


def test_question_mark_and_character_classes(name_list):
    assert paths(name_list.match("servers.web?")) == ["servers.web1", "servers.web2"]
    assert paths(name_list.match("servers.web[12]")) == ["servers.web1", "servers.web2"]
    assert paths(name_list.match("servers.web[0-9]")) == ["servers.web1", "servers.web2"]
    assert paths(name_list.match("servers.web[!1]")) == ["servers.web2"]
    assert paths(name_list.match("servers.web[^1]")) == ["servers.web2"]
    assert paths(name_list.match("servers.web1[0-9]")) == ["servers.web10"]
    assert paths(name_list.match("servers.[a-d]*")) == ["servers.db1"]


def test_braces_nested_and_with_dots(name_list):
    assert paths(name_list.match("servers.{web1,db1}")) == ["servers.db1", "servers.web1"]
    assert paths(name_list.match("servers.{web{1,2},db*}")) == ["servers.db1", "servers.web1", "servers.web2"]
    assert paths(name_list.match("servers.web1.cpu.{user,system}")) == [
        "servers.web1.cpu.system", "servers.web1.cpu.user"]
    assert paths(name_list.match("{servers.web2,apps.api}.*")) == [
        "apps.api.latency", "apps.api.requests", "servers.web2.cpu"]
    assert paths(name_list.match("servers.web{,1}")) == ["servers.web1"]
    assert paths(name_list.match("servers.web{1")) == []  # unclosed brace is a literal


def test_branch_and_leaf_at_once(name_list):
    assert name_list.match("servers.db1.disk") == [Match("servers.db1.disk", False), Match("servers.db1.disk", True)]
    assert name_list.match("servers.db1.*") == [Match("servers.db1.disk", False), Match("servers.db1.disk", True)]
    assert name_list.match("servers.web1") == [Match("servers.web1", False)]


def test_globstar(name_list):
    assert paths(name_list.match("a.**.c")) == ["a.b.c", "a.x.b.c", "a.x.y.b.c"]
    assert paths(name_list.match("a.**.b.c")) == ["a.b.c", "a.x.b.c", "a.x.y.b.c"]
    assert paths(name_list.match("apps.**"), leaf=True) == ["apps.api.latency.p99", "apps.api.requests"]
    assert paths(name_list.match("apps.**"), leaf=False) == ["apps.api", "apps.api.latency"]
    assert paths(name_list.match("**"), leaf=True) == sorted(n for n in NAMES if ";" not in n)
    assert paths(name_list.match("**.user")) == [
        "servers.web1.cpu.user", "servers.web10.cpu.user", "servers.web2.cpu.user"]


def test_tagged_names_are_kept_whole(name_list):
    assert name_list.match("tagged.metric;env=prod;host=a.b") == [Match("tagged.metric;env=prod;host=a.b", True)]
    assert name_list.match("tagged.*") == []
    assert "tagged.metric;env=prod;host=a.b" in name_list.names()


def test_names_and_membership(name_list):
    assert name_list.names() == sorted(NAMES)
    assert len(name_list) == len(NAMES)
    assert "servers.db1.disk" in name_list and "servers.db1" not in name_list


def test_escaped_glob_characters_are_literal():
    name_list = NameList(["a.b*c", "a.bxc"])
    assert paths(name_list.match(r"a.b\*c")) == ["a.b*c"]
    assert paths(name_list.match("a.b*c")) == ["a.b*c", "a.bxc"]


def test_components_match_like_graphite_match_entries():
    # graphite-web's own helper (fnmatch plus brace expansion) is the reference for one component
    from graphite.finders import match_entries

    entries = ["web1", "web2", "web10", "db1", "db-2", "cache", "c", "", "x]y", "w!b", "a,b"]
    name_list = NameList(f"r.{e}" for e in entries if e)
    patterns = ["*", "web*", "*1", "w?b*", "[wd]*", "[!w]*", "web[0-9]", "web[0-9][0-9]", "{web,db}1",
                "{web{1,2},c*}", "*{1,2}", "[a-c]*", "?", "d[a-z]-*", "web{,1}", "x]y", "[]x]*", "a,b"]
    for pattern in patterns:
        expected = sorted(f"r.{e}" for e in match_entries([e for e in entries if e], pattern))
        assert paths(name_list.match("r." + pattern)) == expected, pattern
