"""Graphite glob compilation: a path expression into one matcher per dot-separated component.

Supported: ``*`` and ``?`` (never crossing a dot), ``[abc]``/``[a-z]``/``[!x]``/``[^x]``, ``{a,b}``
(nested, and alternatives may hold dots: those braces are expanded into whole pattern variants,
at most ``MAX_PATTERN_VARIANTS``), ``\\`` escapes, and a whole-component ``**`` (any number of
components). A component compiles to its literal text, a ``Glob`` (the literal head every match
starts with, and a regular expression), or ``None`` for ``**``; ``turok_core.index.names`` walks
the sorted name list with them.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Pattern, Union

GLOBSTAR = "**"
MAX_PATTERN_VARIANTS = 1024  # dotted brace alternatives expanded per pattern


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
    variants = [pattern]
    done: list[str] = []
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


Component = Union[str, Glob, None]  # literal, glob, or None for **


def compile_component(component: str) -> Component:
    """A literal (no glob syntax), a ``Glob``, or ``None`` for the ``**`` globstar."""
    if component == GLOBSTAR:
        return None
    first = _GLOB_CHARS.search(component)
    if first is None:
        return component
    return Glob(component[:first.start()], re.compile(_translate(component), re.DOTALL))


def compile_pattern(pattern: str) -> list[list[Component]]:
    """The component matchers of every dotted-brace variant of ``pattern``."""
    return [[compile_component(part) for part in variant.split(".")]
            for variant in _expand_dotted_braces(pattern)]
