"""NameList (searched by bisection) against a brute-force reference.

The reference knows nothing of sorting: it lists every path (each name is a leaf, each of its
proper component prefixes a branch) and matches the pattern's components against the path's
with ``**`` matching any number of components (one or more when it ends the pattern). Names are
drawn from characters around '.' and '/' in code-point order ('-' < '.' < '/' < '0'), where a
sorted list's runs are easiest to get wrong.
"""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from turok_core.index.glob_compiler import Glob, compile_pattern
from turok_core.index.names import Match, NameList

CHECKS = settings(max_examples=400, deadline=None, database=None, derandomize=True)

component_text = st.text(alphabet="ab-/!0é", min_size=1, max_size=3)
names_strategy = st.lists(st.lists(component_text, min_size=1, max_size=4).map(".".join),
                          max_size=30)
pattern_token = st.sampled_from(["a", "b", "-", "/", "0", "é", "*", "?", "[ab]", "[!a]", "[-/]",
                                 "{a,b-}", "{a.b,0}", "{,/}", "a*", "*-*"])
pattern_component = st.one_of(st.just("**"), st.lists(pattern_token, min_size=1, max_size=3).map("".join))
patterns_strategy = st.lists(pattern_component, min_size=1, max_size=4).map(".".join)


def _fits(parts: list[str], components: list, at: int = 0, index: int = 0) -> bool:
    if index == len(components):
        return at == len(parts)
    component = components[index]
    if component is None:  # **: one or more components at the end, any number elsewhere
        if index == len(components) - 1:
            return len(parts) - at >= 1
        return _fits(parts, components, at, index + 1) or (
            at < len(parts) and _fits(parts, components, at + 1, index))
    if at == len(parts):
        return False
    if isinstance(component, Glob):
        fits = component.regex.fullmatch(parts[at]) is not None
    else:
        fits = parts[at] == component
    return fits and _fits(parts, components, at + 1, index + 1)


def reference_match(names: list[str], pattern: str) -> list[Match]:
    paths = {Match(name, True) for name in names}
    for name in names:
        parts = name.split(".")
        paths.update(Match(".".join(parts[:depth]), False) for depth in range(1, len(parts)))
    variants = compile_pattern(pattern)
    return sorted(path for path in paths
                  if any(_fits(path.path.split("."), components) for components in variants))


@CHECKS
@given(names_strategy, st.lists(patterns_strategy, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_matches_like_the_brute_force_reference(names, patterns, rnd):
    shuffled = names + names[: len(names) // 2]  # duplicates, in any order
    rnd.shuffle(shuffled)
    name_list = NameList(shuffled)
    assert name_list.names() == sorted(set(names)) and len(name_list) == len(set(names))
    for pattern in patterns:
        assert name_list.match(pattern) == reference_match(sorted(set(names)), pattern), pattern
    for name in names:
        assert name in name_list
        parts = name.split(".")
        for depth in range(1, len(parts)):
            assert (".".join(parts[:depth]) in name_list) == (".".join(parts[:depth]) in names)


def test_a_leaf_and_its_branch_with_a_sibling_sorted_between_them():
    # 'web' < 'web-1.cpu' < 'web.cpu': the leaf and the run below it are not neighbours
    name_list = NameList(["h.web", "h.web-1.cpu", "h.web.cpu", "h.web!.x", "h.web/2", "h.wex"])
    assert name_list.match("h.*") == [Match("h.web", False), Match("h.web", True), Match("h.web!", False),
                                 Match("h.web-1", False), Match("h.web/2", True), Match("h.wex", True)]
    assert name_list.match("h.web") == [Match("h.web", False), Match("h.web", True)]
    assert name_list.match("h.web*.*") == [Match("h.web!.x", True), Match("h.web-1.cpu", True),
                                      Match("h.web.cpu", True)]
    assert name_list.match("h.we?") == [Match("h.web", False), Match("h.web", True), Match("h.wex", True)]


def test_sorted_runs_merge_into_one_tree():
    names = [f"dc.c{c}.h{h:02d}.m{m}" for c in range(3) for h in range(40) for m in range(5)]
    runs = [sorted(names[i::7]) for i in range(7)]  # what the shards hold
    name_list = NameList(name for run in runs for name in run)
    assert name_list.names() == sorted(names)
    assert [m.path for m in name_list.match("dc.c1.h0[0-4].m4")] == [f"dc.c1.h0{h}.m4" for h in range(5)]
    assert len(name_list.match("dc.**")) == len(names) + 3 + 3 * 40
    assert name_list.match("dc.c3.*") == [] and random.choice(names) in name_list
