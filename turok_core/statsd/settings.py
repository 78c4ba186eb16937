"""What shapes a StatsD flush: ``StatsdSettings`` (from the ``statsd_*`` fields of a TurokConfig),
etsy's ``percentThreshold`` and ``histogram`` settings parsed and checked at start-up.

Names derived from numbers in the settings (``upper_99_9``, ``bin_0_5``) are written as
JavaScript's ``String(n)`` writes them (``js_number``), so they match etsy's.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from turok_core.model.metric_names import DEFAULT_MAX_NAME_BYTES

if TYPE_CHECKING:
    from turok_core.model.config import TurokConfig


def js_number(value: float) -> str:
    """A number as JavaScript's ``String(n)`` writes it for the usual cases (``90``, ``99.9``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class HistogramSpec:
    """Histogram bins for timers whose key contains ``metric`` (first matching spec wins)."""
    metric: str
    edges: tuple[float, ...]  # ascending; math.inf for etsy's "inf"
    names: tuple[str, ...]  # bin_<edge> with the first dot as "_"


@dataclass(frozen=True)
class StatsdSettings:
    """What shapes a flush; ``from_config`` reads the ``statsd_*`` fields of a TurokConfig."""
    flush_interval: float = 10.0
    percent_thresholds: tuple[float, ...] = (90.0,)
    legacy_namespace: bool = True
    global_prefix: str = "stats"
    prefix_counter: str = "counters"
    prefix_timer: str = "timers"
    prefix_gauge: str = "gauges"
    prefix_set: str = "sets"
    prefix_stats_counts: str = "stats_counts"
    prefix_internal: str = "statsd"
    delete_idle_stats: bool = False
    histograms: tuple[HistogramSpec, ...] = ()
    max_line_length: int = 8192
    max_metric_name_bytes: int = DEFAULT_MAX_NAME_BYTES

    @classmethod
    def from_config(cls, config: TurokConfig) -> StatsdSettings:
        if config.statsd_flush_interval_seconds <= 0:
            raise ValueError("statsd_flush_interval_seconds must be positive")
        return cls(
            flush_interval=float(config.statsd_flush_interval_seconds),
            percent_thresholds=parse_thresholds(config.statsd_percent_thresholds),
            legacy_namespace=config.statsd_legacy_namespace,
            global_prefix=config.statsd_global_prefix,
            prefix_counter=config.statsd_prefix_counter,
            prefix_timer=config.statsd_prefix_timer,
            prefix_gauge=config.statsd_prefix_gauge,
            prefix_set=config.statsd_prefix_set,
            prefix_stats_counts=config.statsd_prefix_stats_counts,
            prefix_internal=config.statsd_prefix_internal,
            delete_idle_stats=config.statsd_delete_idle_stats,
            histograms=parse_histograms(config.statsd_histograms),
            max_line_length=config.statsd_max_line_length,
            max_metric_name_bytes=config.max_metric_name_bytes,
        )


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"90,95,-10"`` -> ``(90.0, 95.0, -10.0)``; each must be non-zero, within [-100, 100]."""
    thresholds = []
    for item in text.split(","):
        if not item.strip():
            continue
        value = float(item)
        if not (0 < abs(value) <= 100):
            raise ValueError(f"statsd percent threshold {item.strip()!r} is not in [-100, 0) or (0, 100]")
        thresholds.append(value)
    return tuple(thresholds)


def parse_histograms(text: str) -> tuple[HistogramSpec, ...]:
    """etsy's ``histogram`` setting as JSON: ``[{"metric": "api", "bins": [10, 100, "inf"]}]``."""
    if not text.strip():
        return ()
    specs = []
    for entry in json.loads(text):
        edges = []
        for edge in entry["bins"]:
            edges.append(math.inf if edge == "inf" else float(edge))
        if edges != sorted(edges):
            raise ValueError(f"statsd histogram bins for {entry['metric']!r} are not ascending")
        names = tuple("bin_inf" if e == math.inf else "bin_" + js_number(e).replace(".", "_", 1) for e in edges)
        specs.append(HistogramSpec(str(entry["metric"]), tuple(edges), names))
    return tuple(specs)
