"""turokd's schema files: the ones in force, the history of those recorded before, and edits.

At start turokd records the files it runs with in the schema history table (a new version when
they changed, ``storage/schema_history.py``) and reads the versions before them, so a block at a
step only an older version had still rolls up as that version said. While it runs, the files
are checked for an operator's edit like carbon-cache does (``model/schema_watch.py``); an edit
that parses takes over at once and is recorded as a start records it, a broken one is reported
and the files in force are kept. Pure and blocking (``record`` calls DynamoDB: run it in a pool).
"""
from __future__ import annotations

from typing import Callable, Optional

from turok_core.model.config import TurokConfig
from turok_core.model.schema_history import SchemaHistory
from turok_core.model.schema_watch import Reload, SchemaWatch
from turok_core.model.schemas import SchemaSet
from turok_core.runtime.aws import make_client
from turok_core.storage.schema_history import SchemaRecord, SchemaRecordTable, load_history


class TurokdSchemas:
    """The schema files in force (``current``), their ``history``, and their watch."""

    def __init__(self, config: TurokConfig, current: SchemaSet, record: Optional[SchemaRecord],
                 clock: Callable[[], float], watch_clock: Callable[[], float]) -> None:
        """``record``: the schema history (None: the configured table, made on first use);
        ``clock``: the wall clock versions are stamped with; ``watch_clock``: the watch's."""
        self._config = config
        self._record = record
        self._clock = clock
        self.current = current
        self.history = SchemaHistory.current_only(current)  # with the recorded versions once recorded
        self._watch = SchemaWatch(config, current, watch_clock)

    @property
    def paths(self) -> str:
        return self._watch.paths

    def record(self) -> bool:
        """Record the files in force (True: a new version) and read the history (blocking)."""
        if self._record is None:
            client = make_client("dynamodb", self._config)
            self._record = SchemaRecordTable(client, self._config.schema_history_table_name)
        recorded = self._record.record(self.current, self._clock())
        self.history = load_history(self._record, self.current)
        return recorded

    def poll(self) -> Optional[Reload]:
        """An edit of the files, if any (its schemas in force from now on; not yet recorded)."""
        reload = self._watch.poll()
        if reload is not None and reload.schemas is not None:
            self.current = reload.schemas
            self.history = self.history.with_current(reload.schemas, self._clock())
        return reload
