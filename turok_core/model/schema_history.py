"""The schema files in force over time: which archives a metric was stored at, and until when.

Turok never rewrites stored data when an operator edits ``storage-schemas.conf`` or
``storage-aggregation.conf``: blocks stay in the day tables of the resolution they were written
at. To read, roll up and expire them, every stage needs the files in force when they were
written. turokd and the keeper record each new pair of files, with the time they first ran with
it, in a durable record (``storage/schema_history.py``); this module is the pure view of that
record:

- ``policies_for(metric)``: the metric's policies, newest first, each with the time it was in
  force until, distinct archives only (the finder reads each part of a range from the resolution
  that holds it, falling back to older ones);
- ``policy_with_step(metric, step)``: the newest policy of the metric with an archive at
  ``step``: data arriving at an older schema's step rolls up the way that schema said;
- ``retention(step, day)``: how long a day table at ``step`` must be kept: the longest
  retention at ``step`` of every version in force since that day began (data of that day may be
  written by any of them), else of the newest version that had ``step`` (the keeper).

The first recorded version counts as in force since forever (data older than the record was
written under it, as far as anyone knows); the current files are always the newest version,
recorded or not.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from turok_core.model.schemas import MetricPolicy, SchemaSet


def files_digest(schemas_text: str, aggregation_text: str) -> str:
    """A short fingerprint of the pair of files (recorded with them; equal files, equal digest)."""
    return hashlib.sha256(f"{schemas_text}\0{aggregation_text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SchemaVersion:
    """One pair of schema files, in force from ``since`` (epoch seconds) until the next one."""
    since: float
    digest: str
    schemas: SchemaSet


@dataclass(frozen=True)
class PastPolicy:
    """A metric's policy under one version, and until when that version was in force."""
    policy: MetricPolicy
    until: float  # math.inf for the current one


class SchemaHistory:
    """Versions of the schema files, oldest first, the current files last."""

    def __init__(self, versions: Sequence[SchemaVersion]) -> None:
        if not versions:
            raise ValueError("a schema history holds at least the current files")
        self.versions = tuple(versions)
        self._policies: dict[str, tuple[PastPolicy, ...]] = {}

    @classmethod
    def current_only(cls, schemas: SchemaSet) -> SchemaHistory:
        """The history of a store that recorded nothing: the current files, since forever."""
        return cls([SchemaVersion(-math.inf, files_digest(schemas.schemas_text, schemas.aggregation_text), schemas)])

    @classmethod
    def from_records(cls, records: Iterable[Mapping], current: SchemaSet) -> SchemaHistory:
        """The history from recorded ``{"since", "digest", "schemas", "aggregation"}`` records
        (any order) with ``current`` as its newest version. A record that no longer parses is
        skipped (it cannot have been recorded by a running Turok, but a record is no reason
        to refuse to start)."""
        versions: list[SchemaVersion] = []
        for record in sorted(records, key=lambda r: float(r["since"])):
            try:
                schemas = SchemaSet.from_texts(record["schemas"], record["aggregation"],
                                               f"recorded at {record['since']}:")
            except (ValueError, KeyError):
                continue
            if versions and versions[-1].digest == record["digest"]:
                continue  # recorded twice in a row (two processes starting together)
            versions.append(SchemaVersion(float(record["since"]), str(record["digest"]), schemas))
        digest = files_digest(current.schemas_text, current.aggregation_text)
        if versions and versions[-1].digest == digest:  # the files as loaded, not as recorded
            versions[-1] = SchemaVersion(versions[-1].since, digest, current)
        else:  # not recorded yet: in force from some time not known, so older ones count as still in force
            versions.append(SchemaVersion(math.inf, digest, current))
        versions[0] = SchemaVersion(-math.inf, versions[0].digest, versions[0].schemas)
        return cls(versions)

    def with_current(self, current: SchemaSet, since: float) -> SchemaHistory:
        """This history with ``current`` (the files reloaded while running) as its newest
        version, in force from ``since`` (not before the version it follows)."""
        digest = files_digest(current.schemas_text, current.aggregation_text)
        last = self.versions[-1]
        if last.digest == digest:
            return SchemaHistory([*self.versions[:-1], SchemaVersion(last.since, digest, current)])
        return SchemaHistory([*self.versions, SchemaVersion(max(since, last.since), digest, current)])

    @property
    def current(self) -> SchemaSet:
        return self.versions[-1].schemas

    def policies_for(self, metric: str) -> tuple[PastPolicy, ...]:
        """The metric's policies, newest first, one per distinct archive list (the newest
        version having it, in force until the last version having it ended); versions where no
        schema matched the metric are left out."""
        cached = self._policies.get(metric)
        if cached is not None:
            return cached
        found: list[PastPolicy] = []
        seen: set = set()
        ends = [version.since for version in self.versions[1:]] + [math.inf]
        for version, until in reversed(list(zip(self.versions, ends))):
            try:
                policy = version.schemas.policy_for(metric)
            except ValueError:
                continue
            if policy.archives in seen:
                continue
            seen.add(policy.archives)
            found.append(PastPolicy(policy, until))
        if len(self._policies) > 100_000:  # bounded, like PolicyCache
            self._policies.clear()
        self._policies[metric] = result = tuple(found)
        return result

    def policy_with_step(self, metric: str, step: int) -> Optional[MetricPolicy]:
        """The newest policy of ``metric`` with an archive at ``step``, or None."""
        for past in self.policies_for(metric):
            if any(archive.step == step for archive in past.policy.archives):
                return past.policy
        return None

    def retention(self, step: int, day: int) -> Optional[int]:
        """Seconds a day table of ``day`` (its UTC midnight) at ``step`` must be kept (module
        doc); None when no version ever had ``step``."""
        ends = [version.since for version in self.versions[1:]] + [math.inf]
        longest = 0
        for version, until in zip(self.versions, ends):
            if until <= day:
                continue  # ended before the day began (its data of that day cannot exist)
            longest = max(longest, _retention_at(version.schemas, step))
        if longest:
            return longest
        for version in reversed(self.versions):
            found = _retention_at(version.schemas, step)
            if found:
                return found
        return None

    def steps(self) -> set[int]:
        """Every step any version had."""
        return {archive.step for version in self.versions for _name, archives in version.schemas.archive_sets()
                for archive in archives}


def _retention_at(schemas: SchemaSet, step: int) -> int:
    return max((archive.retention for _name, archives in schemas.archive_sets() for archive in archives
                if archive.step == step), default=0)

