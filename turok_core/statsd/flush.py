"""What a StatsD flush computes: etsy's graphite backend's points for one interval.

``FlushNames`` holds the names a flush writes under (namespaces, StatsD's own counters, the
percent thresholds' stat names), worked out once from the settings, and how many bytes they
add to a key at most. ``flush_points`` turns one interval's state (``IntervalState``: the
aggregator's dicts and counts) into parallel ``names``/``values`` lists, in etsy's order:
counters (rate and count), timers (``timer_stats``: percent thresholds, std, upper, lower,
count, count_ps, sum, sum_squares, mean, median, then histogram bins), gauges, set counts,
numStats and processing_time. Percent thresholds round sample counts with JavaScript's
``Math.round`` (``js_round``), not Python's round-half-even. Starting the next interval is the
aggregator's (``turok_core.statsd.parse``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from turok_core.statsd.settings import HistogramSpec, StatsdSettings, js_number


class IntervalState(Protocol):
    """One flush interval's StatsD state, as ``StatsdAggregator`` keeps it."""
    counters: dict[str, float]
    timers: dict[str, list[float]]
    timer_counts: dict[str, float]
    gauges: dict[str, float]
    sets: dict[str, set[str]]
    packets_received: int
    metrics_received: int
    bad_lines_seen: int


@dataclass(frozen=True)
class FlushNames:
    """The namespaces and stat names of a flush, from the settings (``from_settings``)."""
    counter_rate_ns: str
    counter_count_ns: str
    timer_ns: str
    gauge_ns: str
    set_ns: str
    internal_counters: tuple[str, ...]  # packets_received, metrics_received, bad_lines_seen
    num_stats: str
    processing_time: str
    thresholds: tuple[tuple[float, tuple[str, ...]], ...]  # (percent, its five stat names)
    name_overhead: int  # the most bytes a flush adds to a key: "<namespace>." and ".<suffix>"

    @classmethod
    def from_settings(cls, s: StatsdSettings) -> FlushNames:
        def join(*parts: str) -> str:
            return ".".join(p for p in parts if p)

        if s.legacy_namespace:
            counter_rate_ns = join(s.global_prefix)
            counter_count_ns = join(s.prefix_stats_counts)
        else:
            counter_rate_ns = counter_count_ns = join(s.global_prefix, s.prefix_counter)
        timer_ns = join(s.global_prefix, s.prefix_timer)
        gauge_ns = join(s.global_prefix, s.prefix_gauge)
        set_ns = join(s.global_prefix, s.prefix_set)
        internal = s.prefix_internal
        internal_counters = tuple(join(internal, n) for n in ("packets_received", "metrics_received", "bad_lines_seen"))
        if s.legacy_namespace:  # etsy: statsd.numStats but stats.statsd.processing_time
            num_stats = join(internal, "numStats")
        else:
            num_stats = join(s.global_prefix, internal, "numStats")
        processing_time = join(s.global_prefix, internal, "processing_time")
        thresholds = []
        for pct in s.percent_thresholds:
            clean = js_number(pct).replace(".", "_", 1).replace("-", "top", 1)
            bound = "upper_" if pct > 0 else "lower_"
            thresholds.append((pct, tuple(f"{stat}_{clean}" for stat in (
                "count", "mean", bound.rstrip("_"), "sum", "sum_squares"))))
        namespaces = (counter_rate_ns, counter_count_ns, timer_ns, gauge_ns, set_ns)
        suffixes = ["rate", "count", "count_ps", "sum_squares", "median"]
        suffixes += [name for _, names in thresholds for name in names]
        suffixes += ["histogram." + name for spec in s.histograms for name in spec.names]
        name_overhead = (max(len(ns.encode("utf-8")) + 1 for ns in namespaces)
                         + max(len(suffix.encode("utf-8")) + 1 for suffix in suffixes))
        return cls(counter_rate_ns, counter_count_ns, timer_ns, gauge_ns, set_ns, internal_counters, num_stats,
                   processing_time, tuple(thresholds), name_overhead)


def format_name(namespace: str, key: str, suffix: str = "") -> str:
    """etsy's graphite name: namespace, the key's name, the suffix, then its ``;tags``."""
    name, semicolon, tags = key.partition(";")
    path = f"{namespace}.{name}" if namespace else name
    if suffix:
        path = f"{path}.{suffix}"
    return f"{path};{tags}" if semicolon else path


def flush_points(state: IntervalState, settings: StatsdSettings, flush_names: FlushNames,
                 started: float) -> tuple[list[str], list[float]]:
    """The interval's Graphite points as parallel (names, values); ``started`` is the
    ``time.perf_counter()`` at which the flush began (for ``processing_time``)."""
    s = settings
    interval = s.flush_interval
    names: list[str] = []
    values: list[float] = []
    add_name, add_value = names.append, values.append
    fmt = format_name
    legacy = s.legacy_namespace
    rate_ns, count_ns = flush_names.counter_rate_ns, flush_names.counter_count_ns

    counters = dict(state.counters)
    for internal, seen in zip(flush_names.internal_counters,
                              (state.packets_received, state.metrics_received, state.bad_lines_seen)):
        counters[internal] = counters.get(internal, 0.0) + seen
    for key, count in counters.items():
        if legacy:
            add_name(fmt(rate_ns, key))
            add_name(fmt(count_ns, key))
        else:
            add_name(fmt(rate_ns, key, "rate"))
            add_name(fmt(count_ns, key, "count"))
        add_value(count / interval)
        add_value(count)

    timer_ns = flush_names.timer_ns
    for key, samples in state.timers.items():
        stats = timer_stats(samples, state.timer_counts.get(key, 0.0), interval, flush_names.thresholds,
                            histogram_for(s.histograms, key))
        for stat, value in stats:
            add_name(fmt(timer_ns, key, stat))
            add_value(value)

    gauge_ns = flush_names.gauge_ns
    for key, value in state.gauges.items():
        add_name(fmt(gauge_ns, key))
        add_value(value)
    set_ns = flush_names.set_ns
    for key, members in state.sets.items():
        add_name(fmt(set_ns, key, "count"))
        add_value(float(len(members)))

    num_stats = len(counters) + len(state.timers) + len(state.gauges) + len(state.sets)
    add_name(flush_names.num_stats)
    add_value(float(num_stats))
    add_name(flush_names.processing_time)
    add_value((time.perf_counter() - started) * 1000.0)
    return names, values


def drop_nonfinite(names: list[str], values: list[float]) -> tuple[list[str], list[float], int]:
    """The points without the values that overflowed to inf/NaN, and how many were dropped."""
    if math.isfinite(math.fsum(abs(v) for v in values)):  # the usual case: one sum
        return names, values, 0
    kept = [(n, v) for n, v in zip(names, values) if math.isfinite(v)]
    return [n for n, _ in kept], [v for _, v in kept], len(names) - len(kept)


def timer_stats(samples: list[float], count_weighted: float, interval: float,
                thresholds: tuple[tuple[float, tuple[str, ...]], ...],
                histogram: HistogramSpec | None) -> list[tuple[str, float]]:
    """etsy's per-timer statistics, in its order; an idle timer gives count and count_ps 0."""
    if not samples:
        return [("count", 0.0), ("count_ps", 0.0)]
    ordered = sorted(samples)
    count = len(ordered)
    low, high = ordered[0], ordered[-1]
    cumulative = list(accumulate(ordered))
    cumulative_squares = list(accumulate(v * v for v in ordered))
    out: list[tuple[str, float]] = []
    total, total_squares, mean, boundary = low, low * low, low, high
    for pct, stat_names in thresholds:
        in_threshold = count
        if count > 1:
            in_threshold = js_round(abs(pct) / 100 * count)
            if in_threshold == 0:
                continue
            if pct > 0:
                boundary = ordered[in_threshold - 1]
                total = cumulative[in_threshold - 1]
                total_squares = cumulative_squares[in_threshold - 1]
            else:
                boundary = ordered[count - in_threshold]
                before = count - in_threshold - 1
                total = cumulative[-1] - (cumulative[before] if before >= 0 else 0.0)
                total_squares = cumulative_squares[-1] - (cumulative_squares[before] if before >= 0 else 0.0)
            mean = total / in_threshold
        out.extend(zip(stat_names, (float(in_threshold), mean, boundary, total, total_squares)))
    total, total_squares = cumulative[-1], cumulative_squares[-1]
    mean = total / count
    deviations = 0.0
    for v in ordered:
        deviations += (v - mean) * (v - mean)
    middle = count // 2
    median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    out += [("std", math.sqrt(deviations / count)), ("upper", high), ("lower", low),
            ("count", count_weighted), ("count_ps", count_weighted / interval), ("sum", total),
            ("sum_squares", total_squares), ("mean", mean), ("median", median)]
    if histogram is not None:
        index = 0
        for edge, name in zip(histogram.edges, histogram.names):
            start = index
            while index < count and ordered[index] < edge:  # strict <; inf takes the rest
                index += 1
            out.append(("histogram." + name, float(index - start)))
    return out


def histogram_for(histograms: tuple[HistogramSpec, ...], key: str) -> HistogramSpec | None:
    """The first histogram spec whose ``metric`` is part of ``key``, if any."""
    for spec in histograms:
        if spec.metric in key:
            return spec
    return None


def js_round(x: float) -> int:
    """JavaScript's Math.round: halves go up (Python's round() goes to even)."""
    return math.floor(x + 0.5)
