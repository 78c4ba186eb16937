"""Noticing an operator's edit of the schema files while a service runs, as carbon-cache does.

carbon-cache reads ``storage-schemas.conf`` and ``storage-aggregation.conf`` again every 60 s
(``carbon/writer.py``: ``reloadStorageSchemas``, a failure logged and the old rules kept).
``SchemaWatch.poll`` does the same at most every ``interval`` seconds (the configuration's
``schema_reload_seconds``; 0 never): it compares both files' modification time and size with
what it saw last, and only when they changed parses them again. The answer is a ``Reload``: the
new ``SchemaSet``, or the reason the edited files were refused (the caller logs it and keeps the
schemas it has; the same broken files are not reported again until they change). Files touched
but unchanged in content give no reload. Pure and blocking (a stat, and a read after an edit):
small enough for a reactor thread every minute.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from turok_core.model.config import TurokConfig
from turok_core.model.schemas import SchemaError, SchemaSet

Stamp = tuple[Optional[tuple[int, int]], ...]  # per file: (mtime ns, size), None when missing


@dataclass(frozen=True)
class Reload:
    """What an edit gave: ``schemas`` to use from now on, or ``error`` and the old ones kept."""
    schemas: Optional[SchemaSet]
    error: str = ""

    def describe(self, who: str, paths: str) -> str:
        """The line a service logs for it (an error when refused)."""
        if self.schemas is None:
            return f"{who}: schema files {paths} edited but refused, previous schemas kept: {self.error}"
        return f"{who}: schema files {paths} edited: in force from now on"


class SchemaWatch:
    """The schema files of ``config`` as ``current`` was read from them (see the module)."""

    def __init__(self, config: TurokConfig, current: SchemaSet, clock: Callable[[], float] = time.monotonic,
                 interval: Optional[float] = None) -> None:
        self.config = config
        self.current = current
        self.clock = clock
        self.interval = config.schema_reload_seconds if interval is None else interval
        self._seen = self._stamp()
        self._next = clock() + self.interval

    @property
    def paths(self) -> str:
        return f"{self.config.schemas_path} and {self.config.aggregation_path}"

    def _stamp(self) -> Stamp:
        stamps: list[Optional[tuple[int, int]]] = []
        for path in (self.config.schemas_path, self.config.aggregation_path):
            try:
                info = os.stat(path)
                stamps.append((info.st_mtime_ns, info.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def poll(self) -> Optional[Reload]:
        """None unless the files changed since last seen and ``interval`` has passed."""
        if self.interval <= 0:
            return None
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.interval
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        try:
            schemas = SchemaSet(self.config.schemas_path, self.config.aggregation_path)
        except (SchemaError, ValueError, OSError) as exc:
            return Reload(None, str(exc) or type(exc).__name__)
        if (schemas.schemas_text, schemas.aggregation_text) == (self.current.schemas_text,
                                                                self.current.aggregation_text):
            return None  # touched, or edited back: nothing to change
        self.current = schemas
        return Reload(schemas)
