"""Which day tables exist: the resolutions stored for each day, from ListTables, cached.

The finder reads a metric whose schema files were edited from the resolutions it was stored at
before as well as the current ones (``finder/finder.py``); a resolution whose day tables are
all gone (past their retention) is not asked at all. Knowing that costs ListTables calls (a page
per 100 tables), made at most once per ``ttl`` seconds by one process, never a scan and never a
call per render. A catalog without a lister (a block store that cannot list) says every table
may exist. Thread-safe; blocking (the finder calls it in graphite-web's request threads).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Optional

from turok_core.model.resolution import SECONDS_PER_DAY
from turok_core.runtime.aws import AwsClient
from turok_core.storage.table_names import parse_table_name

CATALOG_TTL = 300.0  # seconds a listing is trusted: the keeper deletes and creates tables daily


def list_table_names(client: AwsClient) -> list[str]:
    """Every table name in the account and region, following ListTables' pagination."""
    names: list[str] = []
    for page in client.get_paginator("list_tables").paginate(PaginationConfig={"PageSize": 100}):
        names.extend(page.get("TableNames", []))
    return names


class TableCatalog:
    """``(day, step)`` of every Turok day table, listed at most once per ``ttl``."""

    def __init__(self, list_names: Optional[Callable[[], Iterable[str]]], prefix: str, joiner: str,
                 ttl: float = CATALOG_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._list = list_names
        self._prefix = prefix
        self._joiner = joiner
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._tables: set[tuple[int, int]] = set()
        self._listed_at: Optional[float] = None
        self.listings = 0  # ListTables rounds made (each may be several pages)

    def _current(self) -> set[tuple[int, int]]:
        with self._lock:
            now = self._clock()
            if self._listed_at is None or now - self._listed_at >= self._ttl:
                assert self._list is not None
                found = set()
                for name in self._list():
                    parsed = parse_table_name(name, self._prefix, self._joiner)
                    if parsed is not None:
                        found.add((parsed.day, parsed.step))
                self._tables, self._listed_at = found, now
                self.listings += 1
            return self._tables

    def has_any(self, step: int, start: int, end: int) -> bool:
        """Some day table at ``step`` exists for a day of ``[start, end)`` (True when unknown)."""
        if self._list is None:
            return True
        tables = self._current()
        first = start - start % SECONDS_PER_DAY
        return any((day, step) in tables for day in range(first, max(end, start + 1), SECONDS_PER_DAY))
