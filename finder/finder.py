"""graphite-web 1.1 storage finder over Turok: names from the S3 index, points from DynamoDB.

graphite-web loads it with ``STORAGE_FINDERS = ('finder.TurokFinder',)``. The configuration is
Turok's own (``$TUROK_CONFIG`` and ``TUROK_*``); nothing touches the network until the first
query. A render's bulk ``fetch`` resolves every path expression against the index, then reads all
the series that share a resolution together (``SeriesReader``: DynamoDB, plus the slots turokd
still holds, asked over ``cache_hosts`` like carbon's CARBONLINK_HOSTS, plus coarse slots not
rolled up yet). A metric whose schema files were edited is read from the resolutions it was
stored at before as well (``past_schemas.py``; the history is read from DynamoDB at most every
``HISTORY_REFRESH_SECONDS``). Edits of the schema files are noticed while graphite-web runs, as
turokd and the gateway notice them (``schema_watch.py``: checked by a read at most every
``schema_reload_seconds``).
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Callable, Iterable, Optional, Sequence

from graphite.finders.utils import BaseFinder
from graphite.node import BranchNode, LeafNode

from finder.past_schemas import merge_parts, past_windows
from finder.reader import TurokReader, Window, archive_window
from turok_core.index.s3_cache import IndexCache
from turok_core.model.config import TurokConfig, load_config
from turok_core.model.schema_history import SchemaHistory
from turok_core.model.schema_watch import SchemaWatch
from turok_core.model.schemas import SchemaSet, load_schemas
from turok_core.runtime.aws import make_client
from turok_core.storage.schema_history import SchemaRecordTable, load_history
from turok_core.storage.series_reader import SeriesReader
from turok_core.storage.table_catalog import TableCatalog
from turok_core.turokd.rollup import consolidate

log = logging.getLogger("turok.finder")

HISTORY_REFRESH_SECONDS = 300.0  # how often the schema history is read again (turokd records edits)


class TurokFinder(BaseFinder):
    """Finds Turok metrics for graphite-web and fetches their points."""

    local = True
    disabled = False
    tags = False  # graphite-web's TagDB resolves seriesByTag; tagged names are found whole

    def __init__(self, config: Optional[TurokConfig] = None, schemas: Optional[SchemaSet] = None,
                 index: Optional[IndexCache] = None, blocks=None, cache=None,
                 clock: Callable[[], float] = time.time, history: Optional[SchemaHistory] = None) -> None:
        """``history``: the schema files in force over time (default: read from DynamoDB)."""
        self.config = config if config is not None else load_config()
        self.schemas = schemas if schemas is not None else load_schemas(self.config)
        self.index = index if index is not None else IndexCache(make_client("s3", self.config), self.config)
        self._blocks = blocks
        self._cache = cache
        self._series: Optional[SeriesReader] = None
        self._clock = clock
        self._history = history
        self._history_read_at: Optional[float] = None if history is None else math.inf
        self._catalog: Optional[TableCatalog] = None
        self._record: Optional[SchemaRecordTable] = None
        self._schema_watch = SchemaWatch(self.config, self.schemas)

    @property
    def blocks(self):
        """The DynamoDB block reader (``turok_core.storage.tables.BlockStore``), made on first use."""
        if self._blocks is None:
            from turok_core.storage.tables import BlockStore
            # the reader builds its BatchGetItem keys itself: botocore's check of each of a
            # request's 100 keys was ~15% of a 1,000-series render's CPU
            self._blocks = BlockStore(make_client("dynamodb", self.config), self.config)
        return self._blocks

    @property
    def series(self) -> SeriesReader:
        """Stored, held and freshly rolled-up slots (``turok_core.storage.series_reader``), made on first use."""
        if self._series is None:
            self._series = SeriesReader(self.blocks, self.config, self.schemas, self._cache, self._clock)
        return self._series

    @property
    def history(self) -> SchemaHistory:
        """The schema history (``model/schema_history.py``), read again every ``HISTORY_REFRESH_SECONDS``;
        the current files alone when it cannot be read."""
        now = time.monotonic()
        if self._history is None or (self._history_read_at is not None
                                     and now - self._history_read_at >= HISTORY_REFRESH_SECONDS):
            self._history_read_at = now
            try:
                if self._record is None:
                    self._record = SchemaRecordTable(make_client("dynamodb", self.config),
                                                     self.config.schema_history_table_name)
                self._history = load_history(self._record, self.schemas)
            except Exception as exc:  # noqa: BLE001 - reading goes on with the current files
                log.warning("turok finder: schema history not read (%r): reading the current schema's "
                            "resolutions only", exc)
                self._history = SchemaHistory.current_only(self.schemas)
        return self._history

    @property
    def catalog(self) -> TableCatalog:
        """Which day tables exist (ListTables, cached), made on first use."""
        if self._catalog is None:
            self._catalog = TableCatalog(getattr(self.blocks, "table_names", None), self.config.table_prefix,
                                         self.config.table_joiner)
        return self._catalog

    def reader(self, path: str) -> TurokReader:
        """The graphite-web reader of ``path``: this finder's fetch, clock and retention lookup."""
        return TurokReader(path, self.fetch_paths, self._clock, self.longest_retention)

    def longest_retention(self, path: str) -> int:
        """Seconds of history ``path`` keeps: the longest retention of its archives."""
        return max(archive.retention for archive in self.schemas.policy_for(path).archives)

    # --- finding -----------------------------------------------------------------------------

    def find_nodes(self, query):
        """BranchNodes and LeafNodes for the glob ``query.pattern`` (a path can be both)."""
        leaves_only = bool(getattr(query, "leaves_only", False))
        for path, is_leaf in self.index.match(query.pattern):
            if is_leaf:
                yield LeafNode(path, self.reader(path))
            elif not leaves_only:
                yield BranchNode(path)

    def get_index(self, requestContext=None) -> list[str]:
        """Every metric name, sorted (``/metrics/index.json``)."""
        return self.index.names()

    # --- fetching ----------------------------------------------------------------------------

    def _check_schemas(self, now: float) -> None:
        """Schema files edited while running: read by the new files from now on, and by the
        ones before for what they stored (the history, with the new files as its newest)."""
        reload = self._schema_watch.poll()
        if reload is None:
            return
        (log.info if reload.schemas else log.error)("%s", reload.describe("turok finder", self._schema_watch.paths))
        if reload.schemas is None:
            return
        self.schemas = reload.schemas
        if self._series is not None:
            self._series.schemas = self.schemas
        if self._history is not None:
            self._history = self._history.with_current(self.schemas, now)

    def _window(self, path: str, start_time: float, end_time: Optional[float], now: float) -> Optional[Window]:
        return archive_window(start_time, end_time, now, self.schemas.policy_for(path).archives)

    def fetch_paths(self, paths: Iterable[str], start_time: float, end_time: Optional[float],
                    now: Optional[float] = None) -> dict:
        """``{path: ((start, end, step), values)}``; paths outside their retention are left out.

        Each path answers from the archive whisper would read (finest covering ``now - start``);
        one ``SeriesReader.read`` per distinct window (in practice: per resolution). A path whose
        schema files were edited also reads the windows of its older policies
        (``past_schemas.py``)."""
        now = self._clock() if now is None else now
        self._check_schemas(now)
        history = self.history
        groups: dict[Window, list[str]] = defaultdict(list)
        edited: dict[str, list[Window]] = {}
        for path in dict.fromkeys(paths):
            if len(history.versions) > 1:
                past = history.policies_for(path)
                if len(past) > 1:
                    windows = past_windows(past, start_time, end_time, now, self.catalog)
                    if windows:
                        edited[path] = windows
                        for window in windows:
                            groups[window].append(path)
                    continue
            window = self._window(path, start_time, end_time, now)
            if window is not None:
                groups[window].append(path)
        read = {window: self.series.read(members, window.step, window.start, window.end, now)
                for window, members in groups.items()}
        results = {}
        for window, members in groups.items():
            points = (window.end - window.start) // window.step
            for path in members:
                if path not in edited:
                    values = read[window].get(path)
                    results[path] = (tuple(window), list(values) if values is not None else [None] * points)
        for path, windows in edited.items():
            results[path] = merge_parts([(window, read[window].get(path)) for window in windows])
        return results

    def _consolidated(self, path: str, time_info: tuple, values: list, max_points: int) -> tuple[tuple, list]:
        """At most ``max_points`` values, merged with the metric's own aggregation method.

        Grafana sends ``maxDataPoints`` with every query; graphite-web would average what is
        longer, so a counter's sums would show as averages (a long-standing Graphite complaint).
        """
        start, _end, step = time_info
        method = self.schemas.policy_for(path).aggregation_type
        start, step, values = consolidate(start, step, values, max_points, method)
        return (start, start + step * len(values), step), values

    def fetch(self, patterns: Sequence[str], start_time: float, end_time: Optional[float],
              now: Optional[float] = None, requestContext=None) -> list[dict]:
        """graphite-web's bulk fetch: every leaf of every pattern, read in as few calls as possible."""
        per_pattern = [(pattern, [m.path for m in self.index.match(pattern) if m.is_leaf])
                       for pattern in patterns]
        data = self.fetch_paths((path for _, paths in per_pattern for path in paths), start_time, end_time, now)
        max_points = (requestContext or {}).get("maxDataPoints")
        results = []
        for pattern, paths in per_pattern:
            for path in paths:
                if path in data:
                    time_info, values = data[path]
                    if max_points:
                        time_info, values = self._consolidated(path, time_info, values, int(max_points))
                    results.append({"pathExpression": pattern, "path": path, "name": path,
                                    "time_info": time_info, "values": values})
        return results
