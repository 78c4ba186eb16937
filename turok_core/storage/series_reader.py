"""Reading series as graphite sees them: stored blocks, the slots turokd still holds, fresh rollups.

turokd writes a block once, when it closes (``open_blocks.py``), and a coarse block once, when
it closes (``rollup_writer.py``). So the newest data of a read lives in three places:
- stored blocks in DynamoDB (``BlockStore.fetch_series``);
- base slots turokd holds in memory, asked over the cache query (``cache_query.CacheClient``)
  *before* DynamoDB is read, so a block written between the two reads is seen in one of them;
- coarse slots whose block has not closed yet: computed here from the finer archive (itself read
  the same way), exactly as ``rollup_writer`` will compute them when the block closes; a settled
  slot (older than the finer archive's retention, ``rollup.settled_before``) keeps a stored value.
The answer is what whisper would give: a point is visible as soon as its Turok message reached
a turokd, in every archive.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Callable, Optional, Protocol, Sequence

from turok_core.model.config import TurokConfig
from turok_core.model.schemas import MetricPolicy, SchemaSet
from turok_core.storage.block_layout import archive_span
from turok_core.turokd.rollup import rollup_known, settled_before, whisper_xff
from turok_core.wire.cache_query import CacheClient

UNSETTLED_SLACK = 60  # seconds a coarse block may take past its close before it is surely stored


class SeriesSource(Protocol):
    """What the reader needs of a block store (``BlockStore``, ``MemoryBlockStore``)."""

    def fetch_series(self, metrics: Sequence[str], step: int, start: int,
                     end: int) -> dict[str, list[Optional[float]]]: ...


class SeriesReader:
    """Reads ``[start, end)`` at one step for many metrics, fresh data included."""

    def __init__(self, store: SeriesSource, config: TurokConfig, schemas: SchemaSet,
                 cache: Optional[CacheClient] = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.schemas = schemas
        self.cache = cache if cache is not None else CacheClient.from_config(config)
        self.clock = clock

    def unsettled_from(self, step: int, now: float, level: int = 0) -> int:
        """Start of the oldest block at ``step`` that may not be written yet at ``now``, for
        archive ``level`` (a coarse archive's blocks are longer: ``block_layout.coarse_block_span``)."""
        span = archive_span(step, level, self.config.block_slots, self.config.coarse_block_slots)
        settled = int(now - self.config.block_close_delay_seconds - UNSETTLED_SLACK)
        return settled - settled % span

    def read(self, metrics: Sequence[str], step: int, start: int, end: int,
             now: Optional[float] = None) -> dict[str, list[Optional[float]]]:
        """Each metric's values for slots ``start, start + step, … < end`` (aligned to ``step``)."""
        now = self.clock() if now is None else now
        levels: dict[str, tuple[MetricPolicy, int]] = {}
        for metric in metrics:
            policy = self.schemas.policy_for(metric)
            level = next((i for i, a in enumerate(policy.archives) if a.step == step), 0)
            levels[metric] = (policy, level)
        base = [m for m in metrics if levels[m][1] == 0]
        cached = self.cache.query(base, start, end) if base else {}
        series = self.store.fetch_series(list(metrics), step, start, end)
        for metric in base:
            row = series[metric]
            for ts, value in cached.get(metric, {}).get(step, {}).items():
                if start <= ts < end:
                    row[(ts - start) // step] = value
        coarse = [m for m in metrics if levels[m][1] > 0]
        if coarse:
            self._fresh_rollups(coarse, levels, series, step, start, end, now)
        return series

    def _fresh_rollups(self, metrics: Sequence[str], levels: dict, series: dict, step: int, start: int,
                       end: int, now: float) -> None:
        """Coarse slots of blocks not closed yet, rolled up from the finer archive as turokd will."""
        tail_start = max(start, self.unsettled_from(step, now, level=1))  # every metric here is coarse at step
        tail_start -= tail_start % step
        if tail_start >= end:
            return
        by_finer: dict[int, list[str]] = defaultdict(list)
        for metric in metrics:
            policy, level = levels[metric]
            by_finer[policy.archives[level - 1].step].append(metric)
        offset = (tail_start - start) // step
        for finer_step, members in by_finer.items():
            finer = self.read(members, finer_step, tail_start, end, now)
            ratio = step // finer_step
            for metric in members:
                policy, level = levels[metric]
                rolled = rollup_row(finer[metric], ratio, policy.aggregation_type, policy.x_files_factor)
                row = series[metric]
                # rolled[i] for i < first_open is a settled slot: whisper no longer recomputes it,
                # so a stored value stands (rollup.settled_before)
                settled = settled_before(now, policy.archives[level - 1].retention)
                first_open = min(len(rolled), math.ceil((settled - tail_start) / step)) if settled > tail_start else 0
                if first_open == 0 and None not in rolled:
                    row[offset:offset + len(rolled)] = rolled
                    continue
                for index, value in enumerate(rolled):
                    if value is not None and (index >= first_open or row[offset + index] is None):
                        row[offset + index] = value


def rollup_row(values: Sequence[Optional[float]], ratio: int, aggregation_type: str,
               x_files_factor: float) -> list[Optional[float]]:
    """``rollup_value`` of each run of ``ratio`` finer ``values`` (a whole number of runs), in one
    pass: a read rolls up a day of coarse slots for each of a render's metrics, so runs without
    gaps, the usual case, take no call per slot (same arithmetic as whisper, bit for bit)."""
    xff = whisper_xff(x_files_factor)
    runs = [values[i:i + ratio] for i in range(0, len(values), ratio)]
    full = FULL_RUN.get(aggregation_type)
    if full is None:
        raise ValueError(f"unknown aggregation {aggregation_type!r}")
    # a run without gaps meets any xFilesFactor, and its known values are the run itself
    return [full(run) if None not in run else
            rollup_known([v for v in run if v is not None], len(run), aggregation_type, xff) for run in runs]


# rollup_known of a run without gaps, as whisper computes it
FULL_RUN: dict[str, Callable[[Sequence[Any]], float]] = {
    "average": lambda run: float(sum(run)) / float(len(run)),
    "sum": lambda run: float(sum(run)),
    "minimum": min,
    "maximum": max,
    "last": lambda run: run[-1],
}
