"""The keeper's plan, computed from names alone: which day tables to delete, which to create.

Pure: no AWS here. A day table ``(day D, step s)`` may go when its whole day is past the
retention of ``s`` — ``D + 1 day <= now - retention(s)`` — where ``retention(s)`` is the longest
retention of any schema archive at step ``s`` (one table holds every metric stored at ``s``, so it
may only go once the longest-lived of them has expired). With the schema history
(``model/schema_history.py``) that is the longest retention at ``s`` of every version of the
files in force since ``D`` began, else of the newest version that had ``s``: a table written
under files edited since lives out the retention it was written with, and a resolution no
current schema has still goes when its old retention ends. A Turok-named table whose step no
schema (no version) mentions is kept and reported: the keeper never deletes what it cannot
reason about. Names that are not Turok's (another prefix, or anything ``parse_table_name``
refuses) are never touched.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

from turok_core.model.resolution import SECONDS_PER_DAY, format_resolution
from turok_core.model.schema_history import SchemaHistory
from turok_core.model.schemas import SchemaSet
from turok_core.model.timefmt import day_name, day_start, to_wire_time
from turok_core.storage.table_names import parse_table_name, table_name

DELETE = "delete"
CREATE = "create"
KEEP_UNKNOWN = "keep"


@dataclass(frozen=True)
class Action:
    """One table the plan is about: ``kind`` is ``delete``, ``create`` or ``keep`` (reported only)."""
    kind: str
    table: str
    day: int  # epoch seconds of the table's UTC midnight
    step: int
    reason: str
    retention: int = 0  # seconds the table's data is kept (deletes); 0: the plan's retention of its step


@dataclass(frozen=True)
class Outcome:
    """What applying one action did: ``status`` is ``done``, ``refused`` or ``failed``."""
    action: Action
    status: str
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    now: int
    prefix: str
    joiner: str
    days_ahead: int
    retentions: Mapping[int, int]  # step → longest retention at that step, seconds
    deletes: tuple[Action, ...]
    creates: tuple[Action, ...]
    unknown: tuple[Action, ...]  # Turok tables at a step no schema has: kept
    kept: int  # Turok tables inside retention (nothing to do)
    ignored: tuple[str, ...] = field(default=())  # names under the prefix Turok did not make
    present: tuple[str, ...] = field(default=())  # every Turok table listed

    @property
    def actions(self) -> tuple[Action, ...]:
        return self.deletes + self.creates + self.unknown

    def cutoff(self, step: int) -> int:
        """The oldest second still inside the retention of ``step``."""
        return self.now - self.retentions[step]

    def cutoff_of(self, action: Action) -> int:
        """The oldest second still inside the retention the action's table is kept for."""
        return self.now - action.retention if action.retention else self.cutoff(action.step)


def retention_by_step(schemas: SchemaSet) -> dict[int, int]:
    """For each step any schema archive uses, the longest retention among those archives."""
    retentions: dict[int, int] = {}
    for _name, archives in schemas.archive_sets():
        for archive in archives:
            retentions[archive.step] = max(retentions.get(archive.step, 0), archive.retention)
    return retentions


def format_duration(seconds: int) -> str:
    """A retention as a person reads it: ``1d``, ``30d``, ``2y``, ``6h``, ``90s``."""
    for unit, size in (("y", 31536000), ("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def make_plan(retentions: Mapping[int, int], table_names: Iterable[str], prefix: str, joiner: str,
              now: int, days_ahead: int = 1,
              retention_of: Optional[Callable[[int, int], Optional[int]]] = None) -> Plan:
    """The plan for the tables ``table_names`` (every table listed, any prefix) at time ``now``.

    ``retentions`` maps each schema step to its retention (``retention_by_step``). Tables to
    create are today's and the next ``days_ahead`` days' for every step, when missing.
    ``retention_of(step, day)``, when given, is a table's retention instead (the schema
    history's, ``SchemaHistory.retention``).
    """
    if days_ahead < 0:
        raise ValueError(f"days_ahead must be >= 0, not {days_ahead}")
    now = int(now)
    deletes: list[Action] = []
    unknown: list[Action] = []
    ignored: list[str] = []
    present: set[str] = set()
    kept = 0
    head = prefix + joiner
    for name in sorted(set(table_names)):
        parsed = parse_table_name(name, prefix, joiner)
        if parsed is None:
            if name.startswith(head):
                ignored.append(name)
            continue
        present.add(name)
        day, step = parsed
        retention = retention_of(step, day) if retention_of is not None else retentions.get(step)
        if retention is None:
            unknown.append(Action(KEEP_UNKNOWN, name, day, step,
                                  f"unknown resolution {format_resolution(step)} (no schema archive), kept"))
        elif day + SECONDS_PER_DAY <= now - retention:
            deletes.append(Action(DELETE, name, day, step,
                                  f"day {day_name(day)} ended {to_wire_time(day + SECONDS_PER_DAY)}, "
                                  f"before the {format_resolution(step)} retention "
                                  f"({format_duration(retention)}) began at {to_wire_time(now - retention)}",
                                  retention))
        else:
            kept += 1
    creates: list[Action] = []
    today = day_start(now)
    for step in sorted(retentions):
        for ahead in range(days_ahead + 1):
            day = today + ahead * SECONDS_PER_DAY
            name = table_name(prefix, joiner, day, step)
            if name not in present:
                when = "today" if not ahead else f"{ahead} day(s) ahead"
                creates.append(Action(CREATE, name, day, step,
                                      f"{format_resolution(step)} table for {day_name(day)} ({when}) is missing"))
    order = lambda action: (action.step, action.day)  # noqa: E731 (per resolution, oldest first)
    return Plan(now, prefix, joiner, days_ahead, dict(retentions), tuple(sorted(deletes, key=order)),
                tuple(creates), tuple(sorted(unknown, key=order)), kept, tuple(ignored), tuple(sorted(present)))


def plan_for(schemas: SchemaSet, table_names: Iterable[str], prefix: str, joiner: str, now: int,
             days_ahead: int = 1, history: Optional[SchemaHistory] = None) -> Plan:
    """``make_plan`` with the retentions of ``schemas`` (and of ``history``, when given, for
    the tables to delete)."""
    return make_plan(retention_by_step(schemas), table_names, prefix, joiner, now, days_ahead,
                     history.retention if history is not None else None)


def _outcomes_by_table(outcomes: Optional[Iterable[Outcome]]) -> dict[str, Outcome]:
    return {outcome.action.table: outcome for outcome in outcomes or ()}


def render_text(plan: Plan, outcomes: Optional[Iterable[Outcome]] = None,
                notes: Iterable[str] = ()) -> str:
    """One line per action with its reason (and, once applied, its status), then a summary."""
    applied = outcomes is not None
    results = _outcomes_by_table(outcomes)
    retentions = ", ".join(f"{format_resolution(s)}={format_duration(r)}" for s, r in sorted(plan.retentions.items()))
    lines = [f"turok-keeper {'apply' if applied else 'plan (dry run; --apply to act)'} at "
             f"{to_wire_time(plan.now)} UTC, tables {plan.prefix}{plan.joiner}*, retention {retentions}"]
    width = max([len(a.table) for a in plan.actions] + [10])
    for action in plan.actions:
        line = f"{action.kind:<7} {action.table:<{width}}  {action.reason}"
        outcome = results.get(action.table)
        if outcome is not None and action.kind != KEEP_UNKNOWN:
            line += f"  -> {outcome.status.upper()}" + (f": {outcome.detail}" if outcome.detail else "")
        lines.append(line)
    for name in plan.ignored:
        lines.append(f"{'ignore':<7} {name:<{width}}  not a Turok table name, never touched")
    lines.append(f"summary: {len(plan.deletes)} to delete, {len(plan.creates)} to create, "
                 f"{len(plan.unknown)} unknown kept, {plan.kept} inside retention, {len(plan.ignored)} ignored")
    if applied:
        counts: dict[str, int] = {}
        for outcome in results.values():
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        lines.append("applied: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do"))
    lines.extend(notes)
    return "\n".join(lines) + "\n"


def to_json(plan: Plan, outcomes: Optional[Iterable[Outcome]] = None,
            extra: Optional[Mapping[str, object]] = None) -> str:
    """The plan (and outcomes, once applied) as one JSON document for machines."""
    results = _outcomes_by_table(outcomes)

    def entry(action: Action) -> dict:
        item = {"action": action.kind, "table": action.table, "day": day_name(action.day),
                "day_epoch": action.day, "resolution": format_resolution(action.step),
                "step": action.step, "reason": action.reason}
        outcome = results.get(action.table)
        if outcome is not None and action.kind != KEEP_UNKNOWN:
            item["status"], item["detail"] = outcome.status, outcome.detail
        elif action.kind != KEEP_UNKNOWN:
            item["status"] = "planned"
        return item

    document = {
        "now": plan.now,
        "now_utc": to_wire_time(plan.now),
        "applied": outcomes is not None,
        "prefix": plan.prefix,
        "joiner": plan.joiner,
        "days_ahead": plan.days_ahead,
        "retentions": {format_resolution(s): r for s, r in sorted(plan.retentions.items())},
        "delete": [entry(a) for a in plan.deletes],
        "create": [entry(a) for a in plan.creates],
        "unknown_kept": [entry(a) for a in plan.unknown],
        "ignored": list(plan.ignored),
        "kept_inside_retention": plan.kept,
    }
    document.update(extra or {})
    return json.dumps(document, indent=2, sort_keys=False)
