"""Graphite tag queries over tagged series names (``TagIndex``), answered as graphite-web's TagDB does.

A tagged series is ``name;tag1=value1;tag2=value2`` with its tags sorted (``name`` is a tag too:
the part before the first ``;``, without leading ``~``). ``TagIndex`` keeps the series as one
list and, for every tag, each value's posting list (ascending positions in that list), so a
``tag=value`` expression is one dictionary lookup and a regex is one test per distinct value.

Expressions (``tag=spec``, ``tag!=spec``, ``tag=~regex``, ``tag!=~regex``) mean exactly what they
mean to graphite-web 1.1's ``LocalDatabaseTagDB`` (its reference answers): a regex not starting
with ``^`` is wrapped as ``^(regex)``; an expression that matches the empty value also matches
series without the tag, and only filters the series the others found; at least one expression
must not match the empty value (``ValueError`` otherwise, with graphite's message). Answers are
sorted by code point, like graphite-web's ``ORDER BY`` on sqlite.

The names come normalised (``turok_core.model.metric_names``: carbon's tag rules, the rules
graphite-web parses by), so they are taken as they are.
"""
from __future__ import annotations

import re
import sys
from array import array
from bisect import bisect_left, insort
from collections import defaultdict
from typing import Collection, Iterable, NamedTuple, Optional, Union

from turok_core.model.metric_names import TAG_SEPARATOR

NAME_TAG = "name"
_TAGSPEC = re.compile(r"^([^;!=]+)(!?=~?)([^;]*)$")
_UNTAGGED = re.compile(r"^[^;\n]*$", re.M)
_UNSEEN = r";(?!(?:{})=)([^=;\n]+)="  # a tag but those listed
_NAME_COLUMN = re.compile(r"^[^;\n]*", re.M)
_COLUMN = r"^(?:[^\n]*;{}=([^;\n]*))?"  # one match per line: the tag's value or ''
NO_NON_EMPTY = "At least one tagspec must not match the empty string"
Limit = Optional[Union[int, str]]  # graphite-web passes the query parameter as it came
# testing one candidate's tags costs about as much as stepping over this many posting entries
TEST_COST = 20
KEPT_EXPRESSIONS = 1000  # regex expressions whose accepted values an index keeps
HOLES = 0.25  # the share of removed series' places an updated index may keep before a rebuild


class TagExpression(NamedTuple):
    """One parsed ``seriesByTag`` expression."""
    tag: str
    operator: str  # '=', '!=', '=~' or '!=~'
    spec: str  # the value, or the regex as graphite anchors it
    matches_empty: bool  # whether a series without the tag passes

    def accepts(self, value: str) -> bool:
        """Whether a series whose value of ``tag`` is ``value`` ('' when absent) passes: graphite's
        filter step (regexes matched) for an empty-matching expression, its ``WHERE`` (the tag
        present, regexes searched) for the others."""
        if not self.matches_empty and not value:
            return False
        if self.operator == "=":
            return value == self.spec
        if self.operator == "!=":
            return value != self.spec
        found = (re.match if self.matches_empty else re.search)(self.spec, value) is not None
        return found if self.operator == "=~" else not found


def parse_expression(text: str) -> TagExpression:
    """``text`` as a ``TagExpression``; ``ValueError`` for what graphite calls an invalid tagspec
    (``re.error`` for a regex that does not compile)."""
    found = _TAGSPEC.match(text)
    if found is None:
        raise ValueError(f"Invalid tagspec {text}")
    tag, operator, spec = found.groups()
    if operator in ("=~", "!=~"):
        if not spec.startswith("^"):
            spec = f"^({spec})"
        empty = re.match(spec, "") is not None
        return TagExpression(tag, operator, spec, empty if operator == "=~" else not empty)
    return TagExpression(tag, operator, spec, (spec == "") == (operator == "="))


def value_of(series: str, tag: str) -> str:
    """The value of ``tag`` in a (normalised) series name, '' when it has none."""
    if tag == NAME_TAG:
        return series.partition(TAG_SEPARATOR)[0].lstrip("~")
    key = f"{TAG_SEPARATOR}{tag}="
    at = series.find(key)
    if at < 0:
        return ""
    start = at + len(key)
    end = series.find(TAG_SEPARATOR, start)
    return series[start:] if end < 0 else series[start:end]


def _anchored(pattern: str) -> str:
    return pattern if pattern.startswith("^") else f"^({pattern})"


def _limited(items: list, limit: Limit) -> list:
    """graphite-web's ``LIMIT``: applied when ``limit`` is given and not 0."""
    return items[:int(limit)] if limit else items


class TagIndex:
    """Tagged series answering graphite-web's TagDB queries (``find_series``, ``list_tags``, …).

    Loading only keeps the distinct names (in the order given: answers are sorted when made). The
    first query naming a tag scans its column (one regex pass over the joined names in C, one
    comparison per series); the second builds the tag's value postings (one step per series), so
    the million-series index of a dashboard that uses three tags never builds the other seven.
    Threads share an index: a tag built twice at once is harmless (both results are equal).
    ``updated`` makes the next version of an index from the series a refresh removed and added,
    keeping the tags built so far (see there).
    """

    def __init__(self, series: Iterable[str] = (), from_tag_index: bool = False) -> None:
        """``from_tag_index``: the names are the tag index's shards, so distinct (a series lives
        in one shard) and all tagged, and neither is checked; otherwise duplicates and untagged
        names are left out."""
        if from_tag_index:
            self._series: list[str] = list(series)
        else:
            self._series = list(dict.fromkeys(series))
            if _UNTAGGED.search("\n".join(self._series)):  # one scan in C
                self._series = [name for name in self._series if TAG_SEPARATOR in name]
        self._postings: dict[str, dict[str, array]] = {}
        self._scanned: set[str] = set()  # tags a query has scanned once: the next one builds them
        self._sorted_values: dict[str, list[str]] = {}
        self._accepted_values: dict[TagExpression, tuple[list[str], int]] = {}
        self._tags: Optional[list[str]] = None
        self._members: Optional[frozenset[str]] = None
        self._holes = 0  # places of removed series: '' in ``_series``, in no posting list

    def __len__(self) -> int:
        return len(self._series) - self._holes

    def series(self) -> list[str]:
        """Every indexed series, sorted."""
        return sorted(filter(None, self._series)) if self._holes else sorted(self._series)

    def __contains__(self, series: object) -> bool:
        if self._members is None:
            self._members = frozenset(self._series)
        return bool(series) and series in self._members

    def _joined(self) -> str:
        return "\n".join(self._series)

    def tags(self) -> list[str]:
        """Every tag some series has, ``name`` included, sorted."""
        if self._tags is None:
            keys = {NAME_TAG} if len(self) else set()
            text, at = self._joined(), 0
            while True:  # one pass in C, looking only for tags not seen yet
                unseen = _UNSEEN.format("|".join(map(re.escape, sorted(keys - {NAME_TAG}))) or "\n")
                found = re.compile(unseen).search(text, at)
                if found is None:
                    break
                keys.add(found.group(1))
                at = found.start()
            self._tags = sorted(keys)
        return self._tags

    def values(self, tag: str) -> dict[str, array]:
        """Each value of ``tag``: the positions of the series having it, ascending."""
        found = self._postings.get(tag)
        if found is None:
            found = self._postings[tag] = self._build(tag)
        return found

    def _column(self, tag: str) -> list[str]:
        """Each series' value of ``tag`` ('' without it), in series order: one regex pass in C.
        Not kept: a column holds a string per series."""
        if not self._series:
            return []
        if tag != NAME_TAG:
            return re.compile(_COLUMN.format(re.escape(tag)), re.M).findall(self._joined())
        column = _NAME_COLUMN.findall(self._joined())
        if any(value[:1] == "~" for value in set(column)):
            column = [value.lstrip("~") for value in column]  # graphite strips a name's leading '~'
        return column

    def _build(self, tag: str) -> dict[str, array]:
        positions: defaultdict[str, list[int]] = defaultdict(list)
        for at, value in enumerate(self._column(tag)):  # one step per series: the costly part
            positions[value].append(at)
        positions.pop("", None)
        return {value: array("I", at) for value, at in positions.items()}

    # --- updates ---------------------------------------------------------------------------------

    def updated(self, removed: Iterable[str], added: Iterable[str]) -> Optional[TagIndex]:
        """A new index answering as ``TagIndex`` of this one's series without ``removed`` and with
        ``added`` would (``removed`` held here, ``added`` tagged and not held); None when the
        removed series' places would exceed ``HOLES`` of the index (build it anew then).

        This index is left as it is (other threads may be answering from it). The new one shares
        its unchanged posting lists and copies only those of the values the changed series have:
        a removed series leaves a hole ('') at its place, an added one takes a place at the end,
        so every list stays ascending. The tags scanned or built so far stay so."""
        removed, added = list(removed), list(added)
        series = list(self._series)
        places = _places(series, removed)
        holes = self._holes + len(places)
        if holes > HOLES * (len(series) + len(added)):
            return None
        for at in places:
            series[at] = ""
        start = len(series)
        series.extend(added)
        new = TagIndex(from_tag_index=True)
        new._series, new._holes = series, holes
        new._scanned = set(self._scanned)
        unchanged = set()
        for tag, old in list(self._postings.items()):  # list(): other threads may build tags
            changes: defaultdict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
            for at in places:
                changes[value_of(self._series[at], tag)][0].append(at)
            for at, name in enumerate(added, start):
                changes[value_of(name, tag)][1].append(at)
            changes.pop("", None)
            if not changes:
                new._postings[tag] = old
                unchanged.add(tag)
                continue
            values = new._postings[tag] = dict(old)
            for value, (away, more) in changes.items():
                positions = array("I", values.get(value, ()))
                for at in sorted(away, reverse=True):
                    del positions[bisect_left(positions, at)]
                positions.extend(more)
                if positions:
                    values[value] = positions
                else:
                    del values[value]
            ordered = self._sorted_values.get(tag)
            if ordered is not None:
                if any((value in old) != (value in values) for value in changes):
                    ordered = list(ordered)  # a value appeared or disappeared
                    for value in changes:
                        if value not in values:
                            del ordered[bisect_left(ordered, value)]
                        elif value not in old:
                            insort(ordered, value)
                new._sorted_values[tag] = ordered
        new._sorted_values.update((tag, ordered) for tag, ordered in list(self._sorted_values.items())
                                  if tag in unchanged)
        new._accepted_values.update((expression, found) for expression, found in list(self._accepted_values.items())
                                    if expression.tag in unchanged)
        lost = _tags_of(self._series[at] for at in places)
        if self._tags is not None and all(tag in new._postings for tag in lost):
            # a removed series' tag is known to stay only where its lists are built
            tags = set(self._tags).union(_tags_of(added)) - {NAME_TAG}
            tags -= {tag for tag in lost if not new._postings[tag]}
            new._tags = sorted(tags | {NAME_TAG}) if len(new) else []
        return new

    # --- seriesByTag ---------------------------------------------------------------------------

    def find_series(self, expressions: Iterable[str]) -> list[str]:
        """The series matching every expression, sorted (graphite-web's ``find_series``)."""
        series = self._series
        return sorted([series[at] for at in self._matching(expressions)])

    def _matching(self, expressions: Iterable[str]) -> Collection[int]:
        """The positions of the series matching every expression.

        The required expressions are taken smallest first (by the size of what they can match:
        an exact value's posting list, else every series with the tag); each narrows the
        candidates by a posting-list intersection while that is cheaper than testing each
        candidate's own tags, and is a test on the candidates after that, like the expressions
        that also match series without their tag. So a selective query never walks a big list."""
        parsed = [parse_expression(text) for text in expressions]
        required = [expression for expression in parsed if not expression.matches_empty]
        if not required:
            raise ValueError(NO_NON_EMPTY)
        required.sort(key=self._reach)
        matched: Optional[set[int]] = None
        tests: list[TagExpression] = [e for e in parsed if e.matches_empty]
        for expression in required:
            if expression.operator == "!=" and expression.tag in self._postings \
                    and self._reach(expression) == len(self):
                continue  # 'tag!=' where every series has the tag: nothing to narrow
            if matched is not None and len(matched) * TEST_COST < self._reach(expression):
                tests.append(expression)
                continue
            found = self._positions(expression)
            matched = set(found) if matched is None else matched.intersection(found)
        if matched is None:  # only 'tag!=' expressions every series passes
            matched = {at for at, name in enumerate(self._series) if name} if self._holes \
                else set(range(len(self._series)))
        if tests and matched:
            series = self._series
            return [at for at in matched
                    if all(expression.accepts(value_of(series[at], expression.tag)) for expression in tests)]
        return matched

    def _reach(self, expression: TagExpression) -> int:
        """How many series an expression's posting lists hold (what walking them costs).

        For a tag not built yet: an exact value is presumed selective, anything else everything."""
        values = self._postings.get(expression.tag)
        if values is None:
            return 0 if expression.operator == "=" else len(self)
        if expression.operator == "=":
            return len(values.get(expression.spec, ()))
        return self._accepted(expression)[1]

    def _accepted(self, expression: TagExpression) -> tuple[list[str], int]:
        """The values of a built tag a regex or ``tag!=`` expression accepts, and how many series
        have them; kept (a dashboard asks the same again), up to ``KEPT_EXPRESSIONS``."""
        found = self._accepted_values.get(expression)
        if found is None:
            values = self.values(expression.tag)
            if expression.operator == "!=":
                keep = list(values)
            else:
                search = re.compile(expression.spec).search
                wanted = expression.operator == "=~"
                keep = [value for value in values if (search(value) is not None) == wanted]
            found = (keep, sum(len(values[value]) for value in keep))
            if len(self._accepted_values) >= KEPT_EXPRESSIONS:
                self._accepted_values.clear()
            self._accepted_values[expression] = found
        return found

    def _positions(self, expression: TagExpression) -> Collection[int]:
        """The series that have ``expression.tag`` with a value a required expression accepts
        (sqlite's join on the tag and its ``WHERE``: regexes searched).

        The first query naming a tag scans its column (a regex pass and one comparison per
        series); the next one builds the tag's posting lists (one list step per series, several
        times the cost), so a dashboard's first query does not wait for them."""
        tag, operator, spec = expression.tag, expression.operator, expression.spec
        if tag not in self._postings and tag not in self._scanned:
            self._scanned.add(tag)
            column = self._column(tag)
            if operator == "=":
                return [at for at, value in enumerate(column) if value == spec]
            if operator == "!=":  # spec '' here: every series with the tag
                return [at for at, value in enumerate(column) if value]
            search = re.compile(spec).search
            keep = {value for value in set(column) if value and (search(value) is not None) == (operator == "=~")}
            return [at for at, value in enumerate(column) if value in keep]
        values = self.values(tag)
        if operator == "=":
            return values.get(spec, set())
        keep_values = self._accepted(expression)[0]
        if len(keep_values) == 1:
            return values[keep_values[0]]
        found: set[int] = set()
        for value in keep_values:
            found.update(values[value])
        return found

    # --- tags and values -----------------------------------------------------------------------

    def list_tags(self, tag_filter: Optional[str] = None, limit: Limit = None) -> list[dict]:
        """``[{'tag': tag}]`` sorted, optionally those a regex (anchored at the start) finds."""
        tags = self.tags()
        if tag_filter:
            search = re.compile(_anchored(tag_filter)).search
            tags = [tag for tag in tags if search(tag)]
        return [{"tag": tag} for tag in _limited(tags, limit)]

    def list_values(self, tag: str, value_filter: Optional[str] = None, limit: Limit = None) -> list[dict]:
        """``[{'value': value, 'count': series}]`` of ``tag``, sorted, optionally filtered."""
        values = self.values(tag)
        ordered = self._values_sorted(tag)
        if value_filter:
            search = re.compile(_anchored(value_filter)).search
            ordered = [value for value in ordered if search(value)]
        return [{"value": value, "count": len(values[value])} for value in _limited(ordered, limit)]

    def get_tag(self, tag: str, value_filter: Optional[str] = None, limit: Limit = None) -> Optional[dict]:
        """``{'tag': tag, 'values': list_values(…)}``; None for a tag no series has."""
        if tag not in self.tags():
            return None
        return {"tag": tag, "values": self.list_values(tag, value_filter, limit)}

    # --- autocomplete (graphite-web's BaseTagDB answers, without parsing every series) -------------

    def auto_complete_tags(self, expressions: list[str], prefix: Optional[str], limit: int) -> list[str]:
        """The tags of the series matching ``expressions`` (all tags without any), those
        expressions' own tags left out, starting with ``prefix``: sorted, at most ``limit``."""
        if not expressions:
            return [t["tag"] for t in self.list_tags(f"^({re.escape(prefix)})" if prefix else None, limit)]
        searched = {parse_expression(text).tag for text in expressions}
        wanted = {tag for tag in self.tags() if tag not in searched and (not prefix or tag.startswith(prefix))}
        matched = self._matching(expressions)
        found: set[str] = set()
        if matched and NAME_TAG in wanted:
            found.add(NAME_TAG)
        series = self._series
        for at in matched:
            if found >= wanted:
                break  # series mostly share their tags: the first few usually have them all
            found.update(segment.partition("=")[0] for segment in series[at].split(TAG_SEPARATOR)[1:])
        return sorted(found & wanted)[:limit]

    def auto_complete_values(self, expressions: list[str], tag: str, prefix: Optional[str], limit: int) -> list[str]:
        """The values of ``tag`` among the series matching ``expressions`` (all values without
        any), starting with ``prefix``: sorted, at most ``limit``."""
        ordered = self._values_sorted(tag)
        if prefix:  # one run of the sorted values
            start, after = bisect_left(ordered, prefix), _successor(prefix)
            if after is None:
                ordered = [value for value in ordered[start:] if value.startswith(prefix)]
            else:
                ordered = ordered[start:bisect_left(ordered, after, start)]
        if not expressions:
            return ordered[:limit]
        matched = self._matching([*expressions, f"{tag}!="])
        values = self.values(tag)
        found: list[str] = []
        if len(matched) > len(ordered):  # fewer values than series: test each value's postings in order
            positions = set(matched)
            for value in ordered:
                if len(found) >= limit:
                    break
                if not positions.isdisjoint(values[value]):
                    found.append(value)
            return found
        series = self._series
        seen = {value_of(series[at], tag) for at in matched}
        return sorted(value for value in seen if not prefix or value.startswith(prefix))[:limit]

    def _values_sorted(self, tag: str) -> list[str]:
        """``tag``'s values, sorted (kept: a dashboard asks again and again)."""
        found = self._sorted_values.get(tag)
        if found is None:
            found = self._sorted_values[tag] = sorted(self.values(tag))
        return found


def _places(series: list[str], removed: list[str]) -> list[int]:
    """The places of ``removed`` in ``series`` (each held there once)."""
    if len(removed) < 16:  # a search in C each
        return [series.index(name) for name in removed]
    wanted = set(removed)
    return [at for at, name in enumerate(series) if name in wanted]


def _tags_of(series: Iterable[str]) -> set[str]:
    """The tags the series have but ``name``."""
    found: set[str] = set()
    for name in series:
        found.update(segment.partition("=")[0] for segment in name.split(TAG_SEPARATOR)[1:])
    return found


def _successor(text: str) -> Optional[str]:
    """The least string above every string starting with ``text`` (None when there is none)."""
    if ord(text[-1]) == sys.maxunicode:
        return None
    return text[:-1] + chr(ord(text[-1]) + 1)
