"""carbon's ``storage-schemas.conf`` and ``storage-aggregation.conf``, in carbon's own syntax.

For each metric name the first section whose ``pattern`` matches decides its archives
(``retentions = 10s:6h,1m:7d,1h:5y``) and, from the aggregation file, its
``aggregationMethod`` and ``xFilesFactor``. A file that carbon would refuse is refused here at
start-up with the file, line and reason. ``PolicyCache`` remembers a lookup per metric name in
bounded memory: every stage that looks names up on a hot path uses it. ``archive_for_age`` is
whisper's choice of the archive a point of a given age is written to (every input, the import
too, stores a point there and rolls it up from there).
"""
from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Optional, Pattern, Sequence, TypeVar

from turok_core.model.aggregation import normalise_aggregation
from turok_core.model.config import TurokConfig
from turok_core.model.resolution import SECONDS_PER_DAY, parse_duration

DEFAULT_AGGREGATION = "average"
DEFAULT_X_FILES_FACTOR = 0.5
DEFAULT_POLICY_CACHE_SIZE = 1_000_000  # names remembered before a cache starts over


class SchemaError(ValueError):
    """An invalid schema or aggregation file, with file, line and reason in the message."""


@dataclass(frozen=True)
class Archive:
    step: int  # seconds per point
    retention: int  # seconds kept

    @property
    def points(self) -> int:
        return self.retention // self.step


@dataclass(frozen=True)
class MetricPolicy:
    """Everything Turok needs to know about storing one metric."""
    archives: tuple[Archive, ...]
    aggregation_type: str
    x_files_factor: float
    schema_name: str

    @property
    def step(self) -> int:
        """The base (finest) resolution."""
        return self.archives[0].step


def archive_for_age(archives: Sequence[Archive], age: float) -> Optional[Archive]:
    """The archive whisper writes a point of ``age`` seconds (``now - timestamp``) into: the
    first (finest) whose retention covers the age; None when it is older than every retention
    (whisper drops it). A point from the future (negative age) goes to the first archive."""
    for archive in archives:
        if archive.retention >= age:
            return archive
    return None


@dataclass(frozen=True)
class _Rule:
    name: str
    pattern: Pattern[str]


def parse_archive(text: str) -> Archive:
    """One carbon archive, ``precision:retention`` (``10s:6h``, ``60:1440`` = 60 s × 1440 points)."""
    try:
        precision_text, retention_text = text.strip().split(":")
    except ValueError:
        raise ValueError(f"archive {text!r} is not precision:retention") from None
    step = parse_duration(precision_text)
    retention_text = retention_text.strip()
    retention = step * int(retention_text) if retention_text.isdigit() else parse_duration(retention_text)
    return Archive(step, retention)


def validate_archives(archives: list[Archive]) -> None:
    """whisper's rules: finer first, each precision divides the next, each covers longer."""
    if not archives:
        raise ValueError("no archives")
    for archive in archives:
        if SECONDS_PER_DAY % archive.step:
            raise ValueError(f"precision {archive.step}s does not divide a day (Turok stores UTC day tables)")
        if archive.retention < archive.step:
            raise ValueError(f"retention of the {archive.step}s archive is shorter than its precision")
    for finer, coarser in zip(archives, archives[1:]):
        if finer.step >= coarser.step:
            raise ValueError(f"archives must go from finer to coarser ({finer.step}s before {coarser.step}s)")
        if coarser.step % finer.step:
            raise ValueError(f"precision {finer.step}s does not divide {coarser.step}s")
        if coarser.retention <= finer.retention:
            raise ValueError(f"the {coarser.step}s archive must retain longer than the {finer.step}s one")
        if finer.points < coarser.step // finer.step:
            raise ValueError(f"the {finer.step}s archive holds too few points to roll up into {coarser.step}s")


def _section_lines(text: str) -> dict[str, int]:
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^\s*\[([^\]]+)\]", line)
        if match:
            lines[match.group(1)] = number
    return lines


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read: {exc.strerror}") from None


def _parse(path: Path, text: str) -> tuple[configparser.ConfigParser, dict[str, int]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise SchemaError(f"{path}: {exc}") from None
    return parser, _section_lines(text)


def _compile(path: Path, line: int, section: str, pattern: Optional[str]) -> Pattern[str]:
    if pattern is None:
        raise SchemaError(f"{path}:{line}: section [{section}] has no pattern")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SchemaError(f"{path}:{line}: section [{section}]: bad pattern {pattern!r}: {exc}") from None


class SchemaSet:
    """The two carbon files, answering ``policy_for(metric)`` with the first matching sections.

    ``schemas_text`` and ``aggregation_text`` keep the files as read (the schema history
    records them, ``schema_history.py``); ``from_texts`` parses such a recorded pair."""

    def __init__(self, schemas_path: Path, aggregation_path: Optional[Path] = None,
                 texts: Optional[tuple[str, str]] = None) -> None:
        self._schemas: list[tuple[_Rule, tuple[Archive, ...]]] = []
        self._aggregations: list[tuple[_Rule, str, float]] = []
        self._policies: dict[tuple[tuple[Archive, ...], str, float, str], MetricPolicy] = {}
        if texts is not None:
            self.schemas_text, self.aggregation_text = texts
        else:
            self.schemas_text = _read_text(Path(schemas_path))
            self.aggregation_text = ""  # no aggregation file: every metric averages
            if aggregation_path is not None and Path(aggregation_path).exists():
                self.aggregation_text = _read_text(Path(aggregation_path))
        parser, lines = _parse(Path(schemas_path), self.schemas_text)
        for section in parser.sections():
            line = lines.get(section, 0)
            rule = _Rule(section, _compile(schemas_path, line, section, parser[section].get("pattern")))
            retentions = parser[section].get("retentions")
            if not retentions:
                raise SchemaError(f"{schemas_path}:{line}: section [{section}] has no retentions")
            try:
                archives = [parse_archive(part) for part in retentions.split(",")]
                validate_archives(archives)
            except ValueError as exc:
                raise SchemaError(f"{schemas_path}:{line}: section [{section}]: {exc}") from None
            self._schemas.append((rule, tuple(archives)))
        if not self._schemas:
            raise SchemaError(f"{schemas_path}: no schema sections")
        if self.aggregation_text:
            self._load_aggregations(Path(aggregation_path or "storage-aggregation.conf"), self.aggregation_text)

    @classmethod
    def from_texts(cls, schemas_text: str, aggregation_text: str, source: str = "recorded") -> SchemaSet:
        """A SchemaSet of files' contents (``source`` names them in errors)."""
        return cls(Path(f"{source} storage-schemas.conf"), Path(f"{source} storage-aggregation.conf"),
                   (schemas_text, aggregation_text))

    def _load_aggregations(self, path: Path, text: str) -> None:
        parser, lines = _parse(path, text)
        for section in parser.sections():
            line = lines.get(section, 0)
            body = parser[section]
            rule = _Rule(section, _compile(path, line, section, body.get("pattern")))
            try:
                method = normalise_aggregation(body.get("aggregationMethod", DEFAULT_AGGREGATION))
                xff = float(body.get("xFilesFactor", DEFAULT_X_FILES_FACTOR))
            except ValueError as exc:
                raise SchemaError(f"{path}:{line}: section [{section}]: {exc}") from None
            if not 0.0 <= xff <= 1.0:
                raise SchemaError(f"{path}:{line}: section [{section}]: xFilesFactor {xff} is not in [0, 1]")
            self._aggregations.append((rule, method, xff))

    def archive_sets(self) -> list[tuple[str, tuple[Archive, ...]]]:
        """Every schema section's name and archives, in file order (the keeper's retention view)."""
        return [(rule.name, archives) for rule, archives in self._schemas]

    @property
    def longest_retention(self) -> int:
        """Seconds kept by the longest-lived archive of any schema."""
        return max(archive.retention for _rule, archives in self._schemas for archive in archives)

    def policy_for(self, metric: str) -> MetricPolicy:
        """The archives and aggregation of ``metric`` (first matching section of each file)."""
        for rule, archives in self._schemas:  # noqa: B007 - archives is the answer, after the loop
            if rule.pattern.search(metric):
                break
        else:
            raise SchemaError(f"no schema matches {metric!r}; add a catch-all section (pattern = .*)")
        method, xff = DEFAULT_AGGREGATION, DEFAULT_X_FILES_FACTOR
        for agg_rule, agg_method, agg_xff in self._aggregations:
            if agg_rule.pattern.search(metric):
                method, xff = agg_method, agg_xff
                break
        # one object per pair of sections matched, not per metric: turokd's caches keep a policy
        # for every metric it holds
        key = (archives, method, xff, rule.name)
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies[key] = MetricPolicy(archives, method, xff, rule.name)
        return policy


T = TypeVar("T")


class PolicyCache(Generic[T]):
    """``lookup(name)`` remembered per metric name; a name it refuses with ``ValueError`` (a
    ``SchemaError``: no schema matches) is remembered as None.

    Memory is bounded: past ``max_names`` the cache starts over, so a churn of names costs
    repeated lookups, never memory. ``known`` is the cache itself, one dict that stays the same
    object, for hot paths that map ``known.get`` over many names and call the cache only for
    the misses.
    """

    def __init__(self, lookup: Callable[[str], T], max_names: int = DEFAULT_POLICY_CACHE_SIZE) -> None:
        self._lookup = lookup
        self._max_names = max_names
        self.known: dict[str, Optional[T]] = {}

    def __call__(self, name: str) -> Optional[T]:
        """``name``'s value, looked up now if it is not known yet."""
        known = self.known
        if name in known:
            return known[name]
        if len(known) >= self._max_names:
            known.clear()
        try:
            value: Optional[T] = self._lookup(name)
        except ValueError:
            value = None
        known[name] = value
        return value

    def __len__(self) -> int:
        return len(self.known)


def load_schemas(config: TurokConfig) -> SchemaSet:
    """The SchemaSet named by a TurokConfig."""
    return SchemaSet(config.schemas_path, config.aggregation_path)
