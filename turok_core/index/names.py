"""The metric-name index: hash shards for storage, a sorted name list for Graphite globs.

Names are spread over ``shards`` objects by a stable hash of the whole name, so announcing one
new name rewrites one small shard. A shard object is the gzip of its sorted names, one per line.

``NameTree`` (the names' tree, held as one sorted list) answers Graphite path expressions one
dot-separated component at a time:
``*`` and ``?`` (never crossing a dot), ``[abc]``/``[a-z]``/``[!x]``/``[^x]``, ``{a,b}`` (nested,
and alternatives may hold dots), ``\\`` escapes, and a whole-component ``**`` (any number of
components; a trailing ``**`` means everything below). A path may be a branch and a leaf at once.
Tagged names (``a.b;k=v;k2=v2``) are kept whole, apart from the list, and found by exact name.
"""
from __future__ import annotations

import gzip
import operator
import re
import sys
import zlib
from bisect import bisect_left
from itertools import islice
from typing import Iterable, Iterator, NamedTuple, Optional, Pattern, Union

TAG_SEPARATOR = ";"
GLOBSTAR = "**"
MAX_PATTERN_VARIANTS = 1024  # dotted brace alternatives expanded per pattern


class Match(NamedTuple):
    path: str
    is_leaf: bool


def shard_of(name: str, shards: int) -> int:
    """The shard holding ``name``: CRC-32 of its UTF-8 bytes modulo ``shards`` (stable everywhere)."""
    return zlib.crc32(name.encode("utf-8")) % shards


def valid_name(name: str) -> bool:
    """Whether ``name`` can be indexed: non-empty, no line breaks, no empty path component."""
    if not name or "\n" in name or "\r" in name:
        return False
    path = name.split(TAG_SEPARATOR, 1)[0]
    return bool(path) and "" not in path.split(".")


def encode_shard(names: Iterable[str]) -> bytes:
    """A shard object: gzip of the sorted, distinct names, one per line (deterministic bytes)."""
    ordered = sorted(set(names))
    text = "".join(name + "\n" for name in ordered)
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def decode_shard(data: bytes) -> list[str]:
    """The names in a shard object (``encode_shard``'s output)."""
    if not data:
        return []
    names = gzip.decompress(data).decode("utf-8").split("\n")
    if names[-1] == "":
        names.pop()  # after the last name's line break
    if "" in names:  # blank lines: not ours, but harmless
        names = [name for name in names if name]
    return names


# --- glob compilation -------------------------------------------------------------------------

def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` matching the ``{`` at ``start``, or -1 when it is not closed."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _split_alternatives(body: str) -> list[str]:
    """Split a brace body at its top-level commas."""
    parts, depth, current, i = [], 0, [], 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            current.append(body[i:i + 2])
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _expand_dotted_braces(pattern: str) -> list[str]:
    """Expand only the brace groups holding a dot, so every variant splits cleanly into components."""
    variants, done = [pattern], []
    while variants:
        current = variants.pop()
        i, expanded = 0, False
        while i < len(current):
            if current[i] == "\\":
                i += 2
                continue
            if current[i] == "{":
                end = _closing_brace(current, i)
                if end > 0 and "." in current[i:end]:
                    head, tail = current[:i], current[end + 1:]
                    variants.extend(head + alt + tail for alt in _split_alternatives(current[i + 1:end]))
                    if len(variants) + len(done) > MAX_PATTERN_VARIANTS:
                        raise ValueError(f"pattern {pattern!r} expands to too many variants")
                    expanded = True
                    break
            i += 1
        if not expanded:
            done.append(current)
    return done


def _class_end(text: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start``, or -1."""
    i = start + 1
    if i < len(text) and text[i] in "!^":
        i += 1
    if i < len(text) and text[i] == "]":  # a leading ] is a member, as in shells
        i += 1
    end = text.find("]", i)
    return end


def _translate(text: str) -> str:
    """Regular-expression source for one glob component."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(re.escape(text[i + 1]))
            i += 2
        elif char == "*":
            out.append(".*")
            i += 1
        elif char == "?":
            out.append(".")
            i += 1
        elif char == "[":
            end = _class_end(text, i)
            if end < 0:
                out.append(re.escape(char))
                i += 1
                continue
            body = text[i + 1:end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            members = "".join(c if c == "-" else re.escape(c) for c in body)
            out.append(f"[{'^' if negate else ''}{members}]")
            i = end + 1
        elif char == "{":
            end = _closing_brace(text, i)
            if end < 0:
                out.append(re.escape(char))
                i += 1
                continue
            alternatives = _split_alternatives(text[i + 1:end])
            out.append("(?:" + "|".join(_translate(alt) for alt in alternatives) + ")")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


_GLOB_CHARS = re.compile(r"[*?\[{\\]")


class Glob(NamedTuple):
    """A compiled glob component and the literal text every match starts with."""
    head: str
    regex: Pattern[str]


_Component = Union[str, Glob, None]  # literal, glob, or None for **


def compile_component(component: str) -> _Component:
    """A literal (no glob syntax), a ``Glob``, or ``None`` for the ``**`` globstar."""
    if component == GLOBSTAR:
        return None
    first = _GLOB_CHARS.search(component)
    if first is None:
        return component
    return Glob(component[:first.start()], re.compile(_translate(component), re.DOTALL))


def compile_pattern(pattern: str) -> list[list[_Component]]:
    """The component matchers of every dotted-brace variant of ``pattern``."""
    return [[compile_component(part) for part in variant.split(".")]
            for variant in _expand_dotted_braces(pattern)]


# --- the sorted name list -------------------------------------------------------------------

def _successor(text: str) -> Optional[str]:
    """The least string above every string starting with ``text`` (None when there is none)."""
    if not text or ord(text[-1]) == sys.maxunicode:
        return None
    return text[:-1] + chr(ord(text[-1]) + 1)


class NameTree:
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

    def add(self, name: str) -> bool:
        """Insert ``name``; False when it was already there."""
        if TAG_SEPARATOR in name:
            if name in self._tagged:
                return False
            self._tagged.add(name)
            return True
        at = bisect_left(self._names, name)
        if at < len(self._names) and self._names[at] == name:
            return False
        self._names.insert(at, name)
        return True

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

    def _walk(self, path: Optional[str], lo: int, hi: int, components: list[_Component], index: int,
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
