"""TagIndex against a brute-force matcher: random tag sets, random expressions, the same answers.

The brute force follows graphite-web's LocalDatabaseTagDB step by step for every series: an
expression that cannot match the empty value needs the tag and (for regexes) a search of
``^(regex)``; the others filter with ``re.match`` on the value ('' when the tag is absent)."""
import random
import re

import pytest

from turok_core.index.tag_index import NO_NON_EMPTY, TagIndex

TAGS = {"dc": ["eu", "us", "ap"], "host": ["a", "ab", "ba", "b1", "xa"], "role": ["db", "web", "dbx"],
        "env": ["prod", "dev"]}
NAMES = ["disk.used", "disk.free", "cpu.idle", "net"]
VALUE_PATTERNS = ["a", "a.*", ".*a", "b|x", "^x", "d[bB]", "", ".*", "e.", "(eu|us)$", "[0-9]"]


def tags_of(series):
    metric, *rest = series.split(";")
    tags = dict(segment.split("=", 1) for segment in rest)
    tags["name"] = metric
    return tags


def brute_force(series, exprs):
    parsed = []
    for text in exprs:
        tag, op, spec = re.match(r"^([^;!=]+)(!?=~?)([^;]*)$", text).groups()
        if "~" in op and not spec.startswith("^"):
            spec = f"^({spec})"
        if op == "=":
            empty = spec == ""
        elif op == "!=":
            empty = spec != ""
        elif op == "=~":
            empty = re.match(spec, "") is not None
        else:
            empty = re.match(spec, "") is None
        parsed.append((tag, op, spec, empty))
    if all(p[3] for p in parsed):
        raise ValueError(NO_NON_EMPTY)
    found = []
    for name in series:
        tags = tags_of(name)
        ok = True
        for tag, op, spec, empty in parsed:
            value = tags.get(tag, "")
            if not empty:
                if tag not in tags:
                    ok = False
                elif op == "=":
                    ok = value == spec
                elif op == "!=":
                    ok = value != spec
                elif op == "=~":
                    ok = re.search(spec, value) is not None
                else:
                    ok = re.search(spec, value) is None
            else:
                ok = {"=": value == spec, "!=": value != spec, "=~": re.match(spec, value) is not None,
                      "!=~": re.match(spec, value) is None}[op]
            if not ok:
                break
        if ok:
            found.append(name)
    return sorted(found)


def random_series(rnd, count):
    series = set()
    for _ in range(count):
        tags = {tag: rnd.choice(values) for tag, values in TAGS.items() if rnd.random() < 0.7}
        series.add(rnd.choice(NAMES) + "".join(f";{t}={v}" for t, v in sorted(tags.items())))
    return sorted(s for s in series if ";" in s)


def random_expression(rnd):
    tag = rnd.choice(list(TAGS) + ["name", "nosuch"])
    op = rnd.choice(["=", "!=", "=~", "!=~"])
    if "~" in op:
        spec = rnd.choice(VALUE_PATTERNS)
    else:
        pool = NAMES if tag == "name" else TAGS.get(tag, ["zz"])
        spec = rnd.choice(pool + [""])
    return f"{tag}{op}{spec}"


@pytest.mark.parametrize("seed", range(6))
def test_random_expressions_match_the_brute_force(seed):
    rnd = random.Random(seed)
    series = random_series(rnd, rnd.choice([30, 300, 3000]))
    index = TagIndex(series)
    for _ in range(150):
        exprs = [random_expression(rnd) for _ in range(rnd.randint(1, 4))]
        try:
            expected = brute_force(series, exprs)
        except ValueError as exc:
            with pytest.raises(ValueError, match=str(exc)):
                index.find_series(exprs)
            continue
        assert index.find_series(exprs) == expected, exprs


def test_listing_matches_a_count_over_the_series():
    rnd = random.Random(7)
    series = random_series(rnd, 2000)
    index = TagIndex(series)
    counted = {}
    for name in series:
        for tag, value in tags_of(name).items():
            counted.setdefault(tag, {}).setdefault(value, 0)
            counted[tag][value] += 1
    assert [t["tag"] for t in index.list_tags()] == sorted(counted)
    for tag, values in counted.items():
        assert index.list_values(tag) == [{"value": v, "count": values[v]} for v in sorted(values)]
