"""The sorted name list that answers Graphite globs (``NameList``) and its answers (``Match``).

``NameList`` (the names as one sorted list, searched by bisection) answers Graphite path
expressions one dot-separated component at a time, with the matchers of
``turok_core.index.glob_compiler``: ``*``, ``?``, classes, ``{a,b}`` (nested, alternatives may hold
dots), ``\\`` escapes and a whole-component ``**`` (a trailing ``**`` means everything below).
A path may be a branch and a leaf at once. Tagged names (``a.b;k=v;k2=v2``) are kept whole, apart
from the list, and found by exact name.
"""
from __future__ import annotations

import operator
import sys
from bisect import bisect_left
from itertools import islice
from typing import Iterable, Iterator, NamedTuple, Optional

from turok_core.index.glob_compiler import Component, compile_pattern
from turok_core.model.metric_names import TAG_SEPARATOR


class Match(NamedTuple):
    path: str
    is_leaf: bool


def _successor(text: str) -> Optional[str]:
    """The least string above every string starting with ``text`` (None when there is none)."""
    if not text or ord(text[-1]) == sys.maxunicode:
        return None
    return text[:-1] + chr(ord(text[-1]) + 1)


class NameList:
    """Metric names answering Graphite globs, kept as one sorted list of strings.

    The names below a path ``p`` are one contiguous run of the list, ``[p + ".", p + "/")`` ('/'
    follows '.'). A literal component narrows the run with two bisections; a glob component
    steps through the run's children (after narrowing it to its literal head, ``h0`` of
    ``h0[0-9]``), a leaf ``p.c`` being one element and a branch ``p.c.…`` a run skipped with one
    bisection. Building is one sort, which Timsort does as a merge when the names come as sorted
    runs (the shards), so a reader loads a million names in a small fraction of a second; and
    the only object per name is its string, which the garbage collector never traverses (a tree
    of a million node objects made every full collection take 0.1 s more).
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        ordered = list(names)
        self._tagged: set[str] = set()
        # one scan in C, much faster than a test per name; before sorting, while the strings
        # are still in the order they were made (the sorted order scatters them in memory)
        if TAG_SEPARATOR in "".join(ordered):
            self._tagged = {name for name in ordered if TAG_SEPARATOR in name}
            ordered = [name for name in ordered if TAG_SEPARATOR not in name]
        ordered.sort()
        if any(map(operator.eq, ordered, islice(ordered, 1, None))):
            ordered = list(dict.fromkeys(ordered))  # sorted, so the duplicates were neighbours
        self._names: list[str] = ordered  # untagged, sorted, distinct

    def __len__(self) -> int:
        return len(self._names) + len(self._tagged)

    def __contains__(self, name: str) -> bool:
        if TAG_SEPARATOR in name:
            return name in self._tagged
        at = bisect_left(self._names, name)
        return at < len(self._names) and self._names[at] == name

    def names(self) -> list[str]:
        """Every leaf name (tagged ones included), sorted."""
        found = self._names + sorted(self._tagged)
        if self._tagged:
            found.sort()  # two sorted runs: a merge
        return found

    def match(self, pattern: str) -> list[Match]:
        """Every (path, is_leaf) matching ``pattern``, sorted; a path may appear as both kinds."""
        if not pattern:
            return []
        if TAG_SEPARATOR in pattern:
            # tagged series are looked up whole; tag queries belong to a tag index (later)
            return [Match(pattern, True)] if pattern in self._tagged else []
        found: set[Match] = set()
        for components in compile_pattern(pattern):
            self._walk(None, 0, len(self._names), components, 0, found)
        return sorted(found)

    def _below(self, path: str, lo: int, hi: int) -> tuple[int, int]:
        """The run of names below ``path``, searched for within [lo, hi)."""
        start = bisect_left(self._names, path + ".", lo, hi)
        return start, bisect_left(self._names, path + "/", start, hi)

    def _children(self, prefix: str, lo: int, hi: int) -> Iterator[tuple[str, bool, int, int]]:
        """The children of the run [lo, hi) of names starting with ``prefix``, as
        ``(key, True, at, at)`` for the leaf ``prefix + key`` and ``(key, False, start, end)`` for
        the (non-empty) run of names below ``prefix + key``.

        A child that is both comes twice, its leaf first but not always right before its run
        ('web' < 'web-1.x' < 'web.x')."""
        names = self._names
        skip = len(prefix)
        at = lo
        while at < hi:
            name = names[at]
            dot = name.find(".", skip)
            if dot < 0:
                yield name[skip:], True, at, at
                at += 1
            else:
                end = bisect_left(names, name[:dot] + "/", at + 1, hi)
                yield name[skip:dot], False, at, end
                at = end

    def _walk(self, path: Optional[str], lo: int, hi: int, components: list[Component], index: int,
              found: set[Match]) -> None:
        """Match ``components[index:]`` (at least one) below ``path`` (None: the root), whose
        descendants are the names [lo, hi)."""
        if lo >= hi:
            return  # each component left needs a level below (a non-final ** is followed by one)
        component = components[index]
        last = index == len(components) - 1
        prefix = "" if path is None else path + "."
        if component is None:  # **
            if last:
                self._everything_below(prefix, lo, hi, found)
                return
            self._walk(path, lo, hi, components, index + 1, found)  # zero components
            for key, leaf, start, end in self._children(prefix, lo, hi):
                if not leaf:  # nothing below a leaf for the components left to match
                    self._walk(prefix + key, start, end, components, index, found)
        elif isinstance(component, str):
            child = prefix + component
            start, end = self._below(child, lo, hi)
            if not last:
                self._walk(child, start, end, components, index + 1, found)
                return
            at = bisect_left(self._names, child, lo, start)
            if at < start and self._names[at] == child:
                found.add(Match(child, True))
            if start < end:
                found.add(Match(child, False))
        else:
            if component.head:  # only the names starting with it can match
                head = prefix + component.head
                lo = bisect_left(self._names, head, lo, hi)
                after = _successor(head)
                if after is not None:
                    hi = bisect_left(self._names, after, lo, hi)
            fullmatch = component.regex.fullmatch
            for key, leaf, start, end in self._children(prefix, lo, hi):
                if fullmatch(key):
                    if last:
                        found.add(Match(prefix + key, leaf))
                    elif not leaf:
                        self._walk(prefix + key, start, end, components, index + 1, found)

    def _everything_below(self, prefix: str, lo: int, hi: int, found: set[Match]) -> None:
        """Every name in [lo, hi) as a leaf, and every path between ``prefix`` and it as a branch."""
        names = self._names
        start = len(prefix)
        branches: set[str] = set()
        for at in range(lo, hi):
            name = names[at]
            found.add(Match(name, True))
            dot = name.rfind(".", start)
            while dot >= start:
                branch = name[:dot]
                if branch in branches:
                    break  # its own branches were added with it
                branches.add(branch)
                dot = name.rfind(".", start, dot)
        found.update(Match(branch, False) for branch in branches)
