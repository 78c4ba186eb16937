"""The metric-name index: hash shards for storage, a name tree for Graphite globs.

Names are spread over ``shards`` objects by a stable hash of the whole name, so announcing one
new name rewrites one small shard. A shard object is the gzip of its sorted names, one per line.

``NameTree`` answers Graphite path expressions one dot-separated component at a time:
``*`` and ``?`` (never crossing a dot), ``[abc]``/``[a-z]``/``[!x]``/``[^x]``, ``{a,b}`` (nested,
and alternatives may hold dots), ``\\`` escapes, and a whole-component ``**`` (any number of
components; a trailing ``**`` means everything below). A path may be a branch and a leaf at once.
Tagged names (``a.b;k=v;k2=v2``) are kept whole, outside the tree, and found by exact name.
"""
from __future__ import annotations

import gzip
import re
import zlib
from typing import Iterable, NamedTuple, Optional, Pattern, Union

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
    return [line for line in gzip.decompress(data).decode("utf-8").split("\n") if line]


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
_Component = Union[str, Pattern[str], None]  # literal, compiled glob, or None for **


def compile_component(component: str) -> _Component:
    """A literal (no glob syntax), a compiled pattern, or ``None`` for the ``**`` globstar."""
    if component == GLOBSTAR:
        return None
    if not _GLOB_CHARS.search(component):
        return component
    return re.compile(_translate(component), re.DOTALL)


def compile_pattern(pattern: str) -> list[list[_Component]]:
    """The component matchers of every dotted-brace variant of ``pattern``."""
    return [[compile_component(part) for part in variant.split(".")]
            for variant in _expand_dotted_braces(pattern)]


# --- the tree ---------------------------------------------------------------------------------

class _Node:
    __slots__ = ("children", "leaf")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.leaf = False


class NameTree:
    """Metric names as a tree of path components, answering Graphite globs."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._root = _Node()
        self._tagged: set[str] = set()
        self._count = 0
        for name in names:
            self.add(name)

    def __len__(self) -> int:
        return self._count

    def add(self, name: str) -> bool:
        """Insert ``name``; False when it was already there."""
        if TAG_SEPARATOR in name:
            if name in self._tagged:
                return False
            self._tagged.add(name)
            self._count += 1
            return True
        node = self._root
        for part in name.split("."):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
            node = child
        if node.leaf:
            return False
        node.leaf = True
        self._count += 1
        return True

    def __contains__(self, name: str) -> bool:
        if TAG_SEPARATOR in name:
            return name in self._tagged
        node: Optional[_Node] = self._root
        for part in name.split("."):
            node = node.children.get(part)
            if node is None:
                return False
        return node.leaf

    def names(self) -> list[str]:
        """Every leaf name (tagged ones included), sorted."""
        found: list[str] = list(self._tagged)
        stack: list[tuple[str, _Node]] = [(key, child) for key, child in self._root.children.items()]
        while stack:
            path, node = stack.pop()
            if node.leaf:
                found.append(path)
            stack.extend((path + "." + key, child) for key, child in node.children.items())
        found.sort()
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
            self._walk(self._root, "", components, 0, found)
        return sorted(found)

    def _walk(self, node: _Node, path: str, components: list[_Component], index: int,
              found: set[Match]) -> None:
        if index == len(components):
            if node is not self._root:
                if node.leaf:
                    found.add(Match(path, True))
                if node.children:
                    found.add(Match(path, False))
            return
        component = components[index]
        prefix = path + "." if path else ""
        if component is None:  # **
            if index == len(components) - 1:
                self._everything_below(node, prefix, found)
                return
            self._walk(node, path, components, index + 1, found)  # zero components
            for key, child in node.children.items():
                self._walk(child, prefix + key, components, index, found)
        elif isinstance(component, str):
            child = node.children.get(component)
            if child is not None:
                self._walk(child, prefix + component, components, index + 1, found)
        else:
            fullmatch = component.fullmatch
            for key, child in node.children.items():
                if fullmatch(key):
                    self._walk(child, prefix + key, components, index + 1, found)

    @staticmethod
    def _everything_below(node: _Node, prefix: str, found: set[Match]) -> None:
        stack: list[tuple[str, _Node]] = [(prefix + key, child) for key, child in node.children.items()]
        while stack:
            path, current = stack.pop()
            if current.leaf:
                found.add(Match(path, True))
            if current.children:
                found.add(Match(path, False))
                stack.extend((path + "." + key, child) for key, child in current.children.items())
