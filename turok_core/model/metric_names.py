"""Turok's metric-name rule: one rule for every receiver (plaintext, pickle, StatsD) and for turokd.

A name is a UTF-8 dot path, optionally followed by Graphite tags (``a.b;k=v;k2=v2``). The rule:

Normalised (the point is kept under the corrected name):

- runs of dots become one dot and leading or trailing dots go (``.a..b.`` -> ``a.b``): carbon
  stores ``a..b`` as the whisper file ``a/b.wsp``, which Graphite then shows as ``a.b``, and
  carbon-c-relay rewrites the name the same way, so this is the name a Graphite user already
  sees; an empty component would otherwise be a node nobody can query;
- tags are put in carbon's order (sorted by ``;key=value``; a repeated key keeps its last
  value), as carbon does before it stores a tagged series, so one series has one name.

Refused (the point is a bad line, counted and logged with an example by the receiver):

- a name that is empty, or nothing but dots;
- control characters (C0, DEL, C1), any whitespace (ASCII or Unicode): they break the line
  protocols and the index's one-name-per-line shards;
- ``* ? [ ] { }``: Graphite's glob syntax; such a name could never be asked for on its own;
- bytes that are not UTF-8 (the receivers refuse those while decoding);
- longer than ``max_bytes`` UTF-8 bytes (``max_metric_name_bytes``, default 1024, at most 2048:
  the metric name is the DynamoDB partition key, and DynamoDB refuses keys over 2048 bytes),
  or with a path component over 251 bytes (a whisper file name, ``<component>.wsp``, must fit
  the 255-byte file-name limit, so every Turok name can still be exported to carbon);
- a tag that is not ``key=value`` with a non-empty key free of ``!^=`` and a non-empty value
  not starting with ``~`` (Graphite's tag rules).

StatsD keys first go through etsy's own sanitising (``turok_core.statsd.parse.sanitise_key``), then
this rule. turokd's decoder (``turok_core.model.message``) accepts only names this rule leaves
unchanged, within the hard 2048-byte limit.

Checking is batched: ``NameRule.clean`` first tests all the names of a chunk at once with
C-level byte operations (``quick_ok``); only when that finds something does it look at names one
by one, through a bounded cache of the names seen before.
"""
from __future__ import annotations

import re
from typing import Optional

DEFAULT_MAX_NAME_BYTES = 1024
HARD_MAX_NAME_BYTES = 2048  # DynamoDB's partition-key limit: the metric name is the hash key
MAX_COMPONENT_BYTES = 251  # 255-byte file name limit minus ".wsp"
TAG_SEPARATOR = ";"
CACHE_SIZE = 100_000  # names looked at one by one, and their verdicts; cleared when full

# bytes that make a name need a closer look: control characters (but the newline used to join
# a batch), space, DEL, anything not ASCII (Unicode whitespace, C1 controls), glob syntax, ';'
_SUSPECT_BYTES = bytes(range(0, 10)) + bytes(range(11, 33)) + bytes(range(127, 256)) + b"*?[]{};"
# one translate maps every suspect byte to NUL and the joining newline to a dot, so what is left
# to test is one memchr for NUL and one literal search for ".." (faster in re than in bytes.find)
_QUICK_TABLE = bytes(0 if byte in _SUSPECT_BYTES else ord(".") if byte == 10 else byte for byte in range(256))
_TWO_DOTS = re.compile(rb"\.\.")
_REFUSED_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f*?\[\]{}\ud800-\udfff]|\s")
_DOTS = re.compile(r"\.{2,}")
_TAG_KEY_REFUSED = re.compile(r"[!^=]")


class MetricNameError(ValueError):
    """A metric name the rule refuses, with the reason."""


def quick_ok(joined: bytes, longest: int, max_bytes: int) -> bool:
    """True when every name of a batch, joined by ``\\n``, is certainly left as it is.

    ``longest`` is the byte length of the longest name. False means "look closer", not "bad"."""
    if longest > min(max_bytes, MAX_COMPONENT_BYTES):
        return False
    mapped = joined.translate(_QUICK_TABLE)
    return (b"\0" not in mapped and _TWO_DOTS.search(mapped) is None
            and mapped[:1] not in b"." and mapped[-1:] not in b".")


def normalise(name: str, max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> str:
    """``name`` as the rule writes it; raises ``MetricNameError`` when the rule refuses it."""
    bad = _REFUSED_CHARS.search(name)
    if bad:
        raise MetricNameError(f"character {bad.group()!r} is not allowed in a metric name")
    path, separator, tags = name.partition(TAG_SEPARATOR)
    if ".." in path or path[:1] == "." or path[-1:] == ".":
        path = _DOTS.sub(".", path).strip(".")
    if not path:
        raise MetricNameError("empty metric name" if not name else "no path left of the metric name")
    if separator:
        path += _normal_tags(tags)
    size = len(path.encode("utf-8"))
    if size > max_bytes:
        raise MetricNameError(f"{size} bytes, over the {max_bytes}-byte name limit")
    if size > MAX_COMPONENT_BYTES:
        longest = max(len(part.encode("utf-8")) for part in path.partition(TAG_SEPARATOR)[0].split("."))
        if longest > MAX_COMPONENT_BYTES:
            raise MetricNameError(f"a {longest}-byte path component, over the {MAX_COMPONENT_BYTES}-byte limit")
    return path


def _normal_tags(text: str) -> str:
    """``;key=value`` tags sorted carbon's way, a repeated key keeping its last value."""
    tags: dict[str, str] = {}
    for tag in text.split(TAG_SEPARATOR):
        key, equals, value = tag.partition("=")
        if not equals or not key or not value or _TAG_KEY_REFUSED.search(key) or value[0] == "~":
            raise MetricNameError(f"tag {tag[:60]!r} is not key=value (non-empty key without !^=, "
                                  "value not starting with ~)")
        tags[key] = value
    return "".join(sorted(f";{key}={value}" for key, value in tags.items()))


def check_stored(name: object) -> str:
    """``name`` if it can be stored as it is (a string the rule leaves unchanged, within the
    hard limit); raises ``MetricNameError`` otherwise. For decoders of already-cleaned input."""
    if not isinstance(name, str):
        raise MetricNameError(f"metric name must be a string, got {type(name).__name__}")
    raw = name.encode("utf-8", "surrogatepass")
    if quick_ok(raw, len(raw), HARD_MAX_NAME_BYTES):
        return name
    clean = normalise(name, HARD_MAX_NAME_BYTES)
    if clean != name:
        raise MetricNameError(f"metric name {name[:80]!r} is not in normal form ({clean[:80]!r})")
    return name


class NameRule:
    """The rule with a configured ``max_bytes`` and a bounded cache of verdicts.

    The cache only ever holds names that failed ``quick_ok``, so clean traffic never fills it."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> None:
        if not 0 < max_bytes <= HARD_MAX_NAME_BYTES:
            raise ValueError(f"max_metric_name_bytes must be in 1..{HARD_MAX_NAME_BYTES}, got {max_bytes}")
        self.max_bytes = max_bytes
        self._cache: dict[str, tuple[Optional[str], str]] = {}

    def verdict(self, name: str) -> tuple[Optional[str], str]:
        """(the normal name, "") or (None, why it is refused); cached."""
        found = self._cache.get(name)
        if found is None:
            try:
                found = (normalise(name, self.max_bytes), "")
            except MetricNameError as exc:
                found = (None, str(exc))
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[name] = found
        return found

    def clean(self, names: list[str], joined: Optional[bytes] = None,
              longest: int = -1) -> tuple[list[str], Optional[list[int]], list[tuple[str, str]]]:
        """The names of a batch under the rule: (names, kept indices, refused).

        ``kept`` is None when every name is kept (the common case: then ``names`` may be the
        very list given). ``refused`` holds (name, reason) for each refused name. ``joined``
        (the UTF-8 names, none holding a newline, joined by newlines) and ``longest`` (the
        longest name in bytes) save work when the caller has them already."""
        if not names:
            return names, None, []
        if joined is None:
            joined = "\n".join(names).encode("utf-8", "surrogatepass")
            pieces = joined.split(b"\n")
            # a name holding a newline must not pass for two clean names
            longest = max(map(len, pieces)) if len(pieces) == len(names) else -1
        if longest >= 0 and quick_ok(joined, longest, self.max_bytes):
            return names, None, []
        verdict = self.verdict
        verdicts = [verdict(name) for name in names]
        refused = [(name, why) for name, (clean, why) in zip(names, verdicts) if clean is None]
        cleaned = [clean for clean, _ in verdicts if clean is not None]
        if not refused:
            return cleaned, None, []
        kept = [i for i, (clean, _) in enumerate(verdicts) if clean is not None]
        return cleaned, kept, refused
