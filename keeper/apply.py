"""The keeper's AWS side: list the tables, apply a plan with the retention guard, tidy the index.

Blocking boto3 (the keeper is a command, not a service). Tables are created through
``BlockStore.ensure_table`` so their key schema is the one turokd writes. Before a table is
deleted, one bounded Scan reads it whole: a block reaching inside retention (or a scan too long
to finish) refuses that deletion, and the metric names it saw are kept for index hygiene.
Nothing is deleted that the plan did not name.

Index hygiene: names seen in the deleted tables that have no item left in any remaining Turok
table (one ``Query ... Limit 1`` per name and table, today's tables first, then oldest first,
bounded) are removed from the S3 index by compare-and-swap; those found again right after the
removal (a metric that came back meanwhile) are added back. That second look covers every
remaining table plus any Turok table made since the plan listed them, not only today's: a point
stored between a name's first check and its removal may be a late one (yesterday's table) or a
future one (tomorrow's), and turokd, which announces a name once a day, would not announce it
again, so the name would stay out of the index while its data is stored.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from botocore.exceptions import ClientError

from keeper.plan import CREATE, DELETE, Action, Outcome, Plan
from turok_core.index.s3_store import IndexStore
from turok_core.index.tag_cache import make_tag_store, tagged
from turok_core.model.config import TurokConfig
from turok_core.model.timefmt import day_start, to_wire_time
from turok_core.runtime.retry import Backoff, error_code
from turok_core.storage.block_layout import coarse_block_span
from turok_core.storage.block_starts import RECORD_METRIC
from turok_core.storage.table_catalog import list_table_names as list_tables  # the keeper's name for it
from turok_core.storage.table_names import parse_table_name
from turok_core.storage.tables import BlockStore

DEFAULT_GUARD_MAX_PAGES = 2000  # Scan pages of up to 1 MB each: tables up to ~2 GB are checked
DEFAULT_HYGIENE_MAX_QUERIES = 200_000  # Query calls index hygiene may spend in one run
DELETE_ATTEMPTS = 5  # DynamoDB caps concurrent table operations (LimitExceededException)
DELETE_BACKOFF = Backoff(base=2.0, cap=30.0)
MAX_LISTED_NAMES = 1000  # names listed in a report (the counts are always whole)


@dataclass
class TableSurvey:
    """One guard scan: items found inside retention, whether the whole table was read, names seen."""
    found: int = 0
    complete: bool = False
    pages: int = 0
    metrics: set[str] = field(default_factory=set)

    @property
    def safe(self) -> bool:
        return self.complete and not self.found


def survey_table(client, table: str, oldest_block_start: int, max_pages: int = DEFAULT_GUARD_MAX_PAGES,
                 page_limit: Optional[int] = None) -> TableSurvey:
    """Scan ``table`` (keys only) for blocks starting after ``oldest_block_start``, at most ``max_pages`` pages.

    Stops at the first page holding such a block. DynamoDB reads (and bills) every item scanned
    whatever the projection, which is why the scan is bounded.
    """
    request = {
        "TableName": table,
        "ProjectionExpression": "#metric, #start",
        "ExpressionAttributeNames": {"#metric": "metric", "#start": "start_time"},
    }
    if page_limit:
        request["Limit"] = page_limit
    survey = TableSurvey()
    while survey.pages < max_pages:
        response = client.scan(**request)
        survey.pages += 1
        for item in response.get("Items", []):
            if item["metric"]["S"] == RECORD_METRIC:  # the table's record of block starts: no metric
                continue
            survey.metrics.add(item["metric"]["S"])
            if int(item["start_time"]["N"]) > oldest_block_start:
                survey.found += 1
        last = response.get("LastEvaluatedKey")
        if not last:
            survey.complete = True
            return survey
        if survey.found:
            return survey
        request["ExclusiveStartKey"] = last
    return survey


@dataclass
class HygieneReport:
    """What index hygiene did with the names seen in the deleted tables."""
    candidates: int = 0  # distinct names seen in deleted tables
    still_stored: int = 0  # found in a remaining table: kept in the index
    removed: list[str] = field(default_factory=list)  # names with no data left, dropped from the index
    readded: list[str] = field(default_factory=list)  # came back while we removed them: added again
    unresolved: int = 0  # not checked before the query budget ran out: left in the index
    queries: int = 0
    complete: bool = True
    error: str = ""

    def as_dict(self) -> dict:
        return {"candidates": self.candidates, "still_stored": self.still_stored,
                "removed_count": len(self.removed), "removed": sorted(self.removed)[:MAX_LISTED_NAMES],
                "readded": sorted(self.readded)[:MAX_LISTED_NAMES], "unresolved": self.unresolved,
                "queries": self.queries, "complete": self.complete, "error": self.error}

    def summary(self) -> str:
        if self.error:
            return f"index hygiene: FAILED ({self.error}); names it removed before that: {len(self.removed)}"
        text = (f"index hygiene: {self.candidates} name(s) in deleted tables, {self.still_stored} still stored, "
                f"{len(self.removed)} removed from the index, {len(self.readded)} added back, "
                f"{self.queries} queries")
        if not self.complete:
            text += f"; query budget spent, {self.unresolved} name(s) not checked and left in the index"
        return text


class Applier:
    """Applies plans to DynamoDB (and, given an S3 client, keeps the index tidy) for one TurokConfig."""

    def __init__(self, client, config: TurokConfig, s3_client=None,
                 guard_max_pages: int = DEFAULT_GUARD_MAX_PAGES, guard_page_items: Optional[int] = None,
                 hygiene_max_queries: int = DEFAULT_HYGIENE_MAX_QUERIES,
                 sleep: Callable[[float], None] = time.sleep, store: Optional[BlockStore] = None) -> None:
        self._client = client
        self._config = config
        self._s3 = s3_client
        self._guard_max_pages = guard_max_pages
        self._guard_page_items = guard_page_items  # Scan Limit per page (None: DynamoDB's 1 MB pages)
        self._hygiene_max_queries = hygiene_max_queries
        self._sleep = sleep
        self._store = store if store is not None else BlockStore(client, config, sleep=sleep)
        self.hygiene: Optional[HygieneReport] = None  # set by apply when an S3 client was given
        self._seen: set[str] = set()

    def apply(self, plan: Plan) -> list[Outcome]:
        """Create the missing tables first (the newest data needs them), delete the expired ones,
        then (with an S3 client) drop from the index the names left with no data."""
        self._seen = set()
        outcomes = [self._create(action) for action in plan.creates]
        outcomes.extend(self._delete(action, plan) for action in plan.deletes)
        if self._s3 is not None:
            deleted = {o.action.table for o in outcomes if o.action.kind == DELETE and o.status == "done"}
            remaining = (set(plan.present) - deleted) | {a.table for a in plan.creates}
            self.hygiene = self.index_hygiene(self._seen, remaining, plan.now, plan.prefix, plan.joiner,
                                              deleted=deleted)
        return outcomes

    def _create(self, action: Action) -> Outcome:
        assert action.kind == CREATE
        try:
            self._store.ensure_table(action.table)
        except Exception as exc:  # one failure must not stop the other actions
            return Outcome(action, "failed", f"{type(exc).__name__}: {exc}")
        return Outcome(action, "done", "created (or already there), ACTIVE")

    def _delete(self, action: Action, plan: Plan) -> Outcome:
        assert action.kind == DELETE
        # a block covers [start, start + span): it holds a second inside retention when
        # start + span > cutoff; in a table of an expired day none may (blocks never cross midnight).
        # The longest span a block at this step may have: a coarse archive's
        oldest = plan.cutoff_of(action) - coarse_block_span(action.step, self._config.block_slots,
                                                            self._config.coarse_block_slots)
        try:
            survey = survey_table(self._client, action.table, oldest, self._guard_max_pages,
                                  self._guard_page_items)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return Outcome(action, "done", "already gone")
            return Outcome(action, "failed", f"guard scan failed: {exc}")
        if survey.found:
            return Outcome(action, "refused", f"{survey.found} block(s) inside retention "
                                              f"(starting after {to_wire_time(oldest)}); table left as it is")
        if not survey.complete:
            return Outcome(action, "refused", f"guard scan stopped after {survey.pages} page(s) without "
                                              "reading the whole table; table left as it is")
        for attempt in range(DELETE_ATTEMPTS):
            try:
                self._client.delete_table(TableName=action.table)
            except ClientError as exc:
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    return Outcome(action, "done", "already gone")
                if code != "LimitExceededException" or attempt + 1 == DELETE_ATTEMPTS:
                    return Outcome(action, "failed", f"{code or type(exc).__name__}: {exc}")
                self._sleep(DELETE_BACKOFF.delay(attempt))
                continue
            self._seen |= survey.metrics
            return Outcome(action, "done", f"deleted (guard read {survey.pages} page(s), "
                                           f"{len(survey.metrics)} metric(s), nothing inside retention)")
        raise AssertionError("unreachable")  # every attempt returns or continues to the next

    # ----------------------------------------------------------------------------- index hygiene

    def _has_item(self, table: str, metric: str) -> Optional[bool]:
        """Whether ``table`` holds a block of ``metric``; None when the table is gone."""
        try:
            response = self._client.query(
                TableName=table, Select="COUNT", Limit=1, ConsistentRead=True,
                KeyConditionExpression="#metric = :metric",
                ExpressionAttributeNames={"#metric": "metric"},
                ExpressionAttributeValues={":metric": {"S": metric}})
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        return int(response.get("Count", 0)) > 0

    def index_hygiene(self, candidates: Iterable[str], remaining_tables: Iterable[str], now: int,
                      prefix: str, joiner: str, deleted: Iterable[str] = ()) -> HygieneReport:
        """Remove from the index the ``candidates`` with no item in any of ``remaining_tables``.

        ``deleted`` names the tables this run deleted: they may still be listed while DynamoDB
        finishes deleting them, and must not count as a place a name came back to."""
        report = HygieneReport()
        names = sorted(set(candidates))
        report.candidates = len(names)
        if not names:
            return report
        remaining_tables = set(remaining_tables)
        today = day_start(now)
        parsed = {t: parse_table_name(t, prefix, joiner) for t in remaining_tables}
        tables = [t for t, p in parsed.items() if p is not None]
        # live metrics are in today's tables; long-lived dead ones in the oldest tables
        tables.sort(key=lambda t: (parsed[t].day != today, parsed[t].day, parsed[t].step))
        today_tables = [t for t in tables if parsed[t].day == today]
        gone_tables: set[str] = set()
        dead: list[str] = []
        try:
            for position, name in enumerate(names):
                stored = False
                for table in tables:
                    if table in gone_tables:
                        continue
                    if report.queries >= self._hygiene_max_queries:
                        report.complete = False
                        report.unresolved = len(names) - position
                        break
                    report.queries += 1
                    found = self._has_item(table, name)
                    if found is None:
                        gone_tables.add(table)
                    elif found:
                        stored = True
                        break
                if not report.complete:
                    break
                if stored:
                    report.still_stored += 1
                else:
                    dead.append(name)
            if dead:
                index = IndexStore(self._s3, self._config, sleep=self._sleep)
                tag_index = make_tag_store(self._s3, self._config, sleep=self._sleep)
                report.removed = dead  # before the call: a failure part-way may have removed some
                try:
                    index.remove_names(dead)
                    if tagged(dead):  # a tagged series also leaves every posting list of the tag index
                        tag_index.remove_names(tagged(dead))
                finally:
                    # also after a removal that failed part-way (a shard lost every compare-and-swap):
                    # the shards it did rewrite may have taken out a name that came back meanwhile
                    # today's tables first (where a live metric writes), then every other table
                    again = today_tables + [t for t in self._tables_now(remaining_tables, deleted, prefix, joiner)
                                            if t not in today_tables]
                    back = [name for name in dead if self._in_any(again, name, report)]
                    if back:
                        index.add_names(back)
                        if tagged(back):
                            tag_index.add_names(tagged(back))
                        report.readded = back
        except Exception as exc:  # hygiene must not hide what the deletions did
            report.error = f"{type(exc).__name__}: {exc}"
        return report

    def _tables_now(self, remaining: set[str], deleted: Iterable[str], prefix: str, joiner: str) -> list[str]:
        """The remaining Turok tables plus those made since the plan listed them, newest day first."""
        tables = set(remaining) | {t for t in list_tables(self._client) if parse_table_name(t, prefix, joiner)}
        tables -= set(deleted)
        parsed = {t: parse_table_name(t, prefix, joiner) for t in tables}
        return sorted((t for t, p in parsed.items() if p is not None),
                      key=lambda t: (-parsed[t].day, parsed[t].step))

    def _in_any(self, tables: Sequence[str], name: str, report: HygieneReport) -> bool:
        for table in tables:
            report.queries += 1
            if self._has_item(table, name):
                return True
        return False
