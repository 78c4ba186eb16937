"""StatsD with the etsy reference implementation's semantics: parsing, per-flush state, flush.

``StatsdAggregator.ingest`` takes one whole datagram (or a chunk of complete TCP lines) and
applies every line in one loop: the chunk is decoded and split once, key sanitising is cached
per raw key. With the C extension (``turok_core.parse.native``) the clean lines of keys seen before
(``key:value|c``, ``ms``, ``h``, ``g``, with a sample rate or not) are applied in C first, up to
the first line it leaves to this code. ``StatsdAggregator.flush`` computes what etsy's graphite backend would send at a
flush and returns it as parallel ``names``/``values`` lists, then resets the state for the next
interval (counters to 0, timers and sets emptied, gauges kept; with ``delete_idle_stats`` keys
are forgotten instead, so idle keys send nothing).

Line grammar: ``key:value|type[|@rate][|#tag:val,...]``, several ``value|type[|@rate]`` parts
may follow one key (``m:1|c:2|c``). Types: ``c`` counter, ``g`` gauge (``+``/``-`` adjusts an
existing gauge), ``ms`` and ``h`` timer, ``s`` set. Where Turok deliberately differs from etsy:
unknown types, non-finite values (NaN, inf), sample rates that are not positive and finite, and
lines that are not UTF-8 or longer than the limit are bad lines (etsy counts unknown types as
counters and lets Infinity through); ``h`` is a timer (etsy counts it); configured prefixes
also apply in the legacy namespace (etsy ignores them there; the defaults give etsy's names).

Metric names: a key goes through etsy's sanitising (``sanitise_key``), then Turok's metric-name
rule (``turok_core.model.metric_names``: ``a..b`` becomes ``a.b``, tags sorted; an empty key, a bad
tag or a key too long to fit ``max_metric_name_bytes`` once the longest namespace and suffix are
added is a bad line). The flushed names pass the rule once more (a bad configured prefix).

No Twisted here: the gateway's ``gateway.statsd_receivers`` does the sockets and the flush timer.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Optional, Sequence

from turok_core.model.metric_names import DEFAULT_MAX_NAME_BYTES, NameRule
from turok_core.parse.native import speedups as _native

if TYPE_CHECKING:
    from turok_core.model.config import TurokConfig

MAX_BAD_EXAMPLES = 3
BAD_EXAMPLE_CHARS = 200
KEY_CACHE_SIZE = 200_000  # raw key -> sanitised key; cleared when full

_SPACES = re.compile(r"\s+")
_NOT_KEY_CHAR = re.compile(r"[^a-zA-Z_\-0-9.;=]")
_TIMER_TYPES = frozenset(("ms", "h"))


def _js_number(value: float) -> str:
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
    def from_config(cls, config: "TurokConfig") -> "StatsdSettings":
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
        names = tuple("bin_inf" if e == math.inf else "bin_" + _js_number(e).replace(".", "_", 1) for e in edges)
        specs.append(HistogramSpec(str(entry["metric"]), tuple(edges), names))
    return tuple(specs)


def sanitise_key(raw_key: str, tags: str = "") -> str:
    """etsy's key: ``;k=v`` tags appended, whitespace runs -> ``_``, ``/`` -> ``-``, the rest of
    ``[^a-zA-Z_\\-0-9.;=]`` removed. ``tags`` is the text after ``|#`` (``k:v,k2:v2``)."""
    key = raw_key
    if tags:
        # etsy replaces the first ';' and the first ':' of each tag; empty tags are dropped here
        key += "".join(";" + tag.replace(";", "_", 1).replace(":", "=", 1) for tag in tags.split(",") if tag)
    return _NOT_KEY_CHAR.sub("", _SPACES.sub("_", key).replace("/", "-"))


@dataclass
class StatsdTotals:
    """Totals since start, for the service's logs and self-metrics."""
    packets_received: int = 0
    metrics_received: int = 0
    bad_lines_seen: int = 0
    flushes: int = 0
    points_flushed: int = 0
    nonfinite_dropped: int = 0  # flushed values that overflowed to inf/NaN
    # StatsD over TCP (the gateway's connection limits, gateway.connections)
    connections: int = 0
    connections_over_limit: int = 0  # refused: max_connections already open
    idle_closed: int = 0  # closed after idle_timeout_seconds without a byte


@dataclass
class StatsdAggregator:
    """One flush interval's StatsD state; ``ingest`` datagrams, ``flush`` at each interval."""
    settings: StatsdSettings = field(default_factory=StatsdSettings)

    def __post_init__(self) -> None:
        self.counters: dict[str, float] = {}
        self.timers: dict[str, list[float]] = {}
        self.timer_counts: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.sets: dict[str, set[str]] = {}
        # this interval's own counters (etsy's statsd.packets_received & co.)
        self.packets_received = 0
        self.metrics_received = 0
        self.bad_lines_seen = 0
        self.bad_examples: list[str] = []  # a few bad lines since the last take_bad_lines()
        self._bad_pending = 0
        self.totals = StatsdTotals()
        self._keys: dict[str, str] = {}  # raw key (and tags) -> key under the name rule; "" refused
        self._key_refusals: dict[str, str] = {}  # raw key -> why the name rule refused it
        self._namespaces()
        self.name_rule = NameRule(self.settings.max_metric_name_bytes)
        # keys leave room for the longest namespace and suffix a flush can add
        room = self.settings.max_metric_name_bytes - self._name_overhead
        if room < 1:
            raise ValueError(f"max_metric_name_bytes {self.settings.max_metric_name_bytes} leaves no room for "
                             f"StatsD keys after {self._name_overhead} bytes of prefixes and suffixes")
        self._key_rule = NameRule(room)

    # --- input ---------------------------------------------------------------------------------
    def ingest(self, data: bytes, packets: int = 1) -> int:
        """Apply a datagram (or ``packets`` TCP reads' complete lines); returns the bad lines."""
        self.packets_received += packets
        self.totals.packets_received += packets
        applied = 0
        if _native is not None and type(data) is bytes:
            # the clean lines at the start (usually all) in C; the rest from the first other one
            offset, applied = _native.statsd_apply(data, self._keys, self.counters, self.timers,
                                                   self.timer_counts, self.gauges, self.settings.max_line_length)
            if offset:
                data = data[offset:]
        try:
            lines = data.decode("utf-8").split("\n")
            undecodable = 0
        except UnicodeDecodeError:
            lines, undecodable = self._decode_lines(data)
        metrics, bad = self._apply(lines)
        bad += undecodable
        metrics += undecodable + applied
        self.metrics_received += metrics
        self.totals.metrics_received += metrics
        self.bad_lines_seen += bad
        self.totals.bad_lines_seen += bad
        self._bad_pending += bad
        return bad

    def add_bad(self, example: str, count: int = 1) -> None:
        """Count lines refused before parsing (e.g. over-long TCP lines) as bad and received."""
        self.metrics_received += count
        self.totals.metrics_received += count
        self.bad_lines_seen += count
        self.totals.bad_lines_seen += count
        self._bad_pending += count
        self._bad_example(example)

    def take_bad_lines(self) -> Optional[tuple[int, list[str]]]:
        """Bad lines since the last call: (count, a few examples), or None when there were none."""
        if not self._bad_pending:
            return None
        taken = (self._bad_pending, self.bad_examples)
        self._bad_pending, self.bad_examples = 0, []
        return taken

    def _bad_example(self, line: str) -> None:
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append(line[:BAD_EXAMPLE_CHARS] + ("..." if len(line) > BAD_EXAMPLE_CHARS else ""))

    def _decode_lines(self, data: bytes) -> tuple[list[str], int]:
        """Slow path for chunks that are not UTF-8: keep the lines that are, count the others."""
        lines, bad = [], 0
        for raw in data.split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                bad += 1
                self._bad_example(raw.decode("utf-8", "replace") + " (not UTF-8)")
        return lines, bad

    def _apply(self, lines: Sequence[str]) -> tuple[int, int]:
        """Every line of a chunk, in one loop; returns (lines seen, bad parts)."""
        counters, timers, timer_counts = self.counters, self.timers, self.timer_counts
        gauges, sets, keys = self.gauges, self.sets, self._keys
        max_length = self.settings.max_line_length
        metrics = bad = 0
        for line in lines:
            if not line:
                continue
            metrics += 1
            if max_length and len(line) > max_length:
                bad += 1
                self._bad_example(line + f" ({len(line)} chars, over the {max_length} limit)")
                continue
            tags = ""
            if "|#" in line:
                line, tags = line.split("|#", 2)[:2]
            parts = line.split(":")
            if len(parts) < 2:
                bad += 1
                self._bad_example(line)
                continue
            raw_key = parts[0]
            cache_key = raw_key + "|#" + tags if tags else raw_key
            key = keys.get(cache_key)
            if key is None:
                key, why = self._key_rule.verdict(sanitise_key(raw_key, tags))
                if len(keys) >= KEY_CACHE_SIZE:
                    keys.clear()
                    self._key_refusals.clear()
                keys[cache_key] = key or ""
                if key is None:
                    self._key_refusals[cache_key] = why
            if not key:  # the name rule refused what etsy's sanitising left
                bad += len(parts) - 1
                self._bad_example(f"{line} (metric name: {self._key_refusals.get(cache_key, 'refused')})")
                continue
            for index in range(1, len(parts)):
                fields = parts[index].split("|")
                try:
                    kind = fields[1].strip()
                    text = fields[0]
                    rate = 1.0
                    if len(fields) > 2:
                        rate_text = fields[2]
                        if rate_text[:1] != "@" or "_" in rate_text:
                            raise ValueError
                        rate = float(rate_text[1:])
                        if not 0.0 < rate < math.inf:
                            raise ValueError
                    if kind == "s":
                        members = sets.get(key)
                        if members is None:
                            members = sets[key] = set()
                        members.add(text or "0")
                        continue
                    if "_" in text:  # Python's float() takes 1_000; JavaScript's Number() does not
                        raise ValueError
                    value = float(text)
                    if value - value != 0.0:  # NaN or infinite
                        raise ValueError
                    if kind == "c":
                        counters[key] = counters.get(key, 0.0) + value * (1.0 / rate)
                    elif kind in _TIMER_TYPES:
                        if value < 0.0:
                            raise ValueError
                        samples = timers.get(key)
                        if samples is None:
                            samples = timers[key] = []
                        samples.append(value)
                        timer_counts[key] = timer_counts.get(key, 0.0) + 1.0 / rate
                    elif kind == "g":
                        if text[:1] in ("+", "-") and key in gauges:
                            gauges[key] += value
                        else:
                            gauges[key] = value
                    else:
                        raise ValueError
                except (ValueError, IndexError):
                    bad += 1
                    self._bad_example(raw_key + ":" + parts[index])
        return metrics, bad

    # --- output --------------------------------------------------------------------------------
    def _namespaces(self) -> None:
        s = self.settings

        def join(*parts: str) -> str:
            return ".".join(p for p in parts if p)

        if s.legacy_namespace:
            self._counter_rate_ns = join(s.global_prefix)
            self._counter_count_ns = join(s.prefix_stats_counts)
        else:
            self._counter_rate_ns = self._counter_count_ns = join(s.global_prefix, s.prefix_counter)
        self._timer_ns = join(s.global_prefix, s.prefix_timer)
        self._gauge_ns = join(s.global_prefix, s.prefix_gauge)
        self._set_ns = join(s.global_prefix, s.prefix_set)
        internal = s.prefix_internal
        self._internal_counters = tuple(join(internal, n) for n in
                                        ("packets_received", "metrics_received", "bad_lines_seen"))
        if s.legacy_namespace:  # etsy: statsd.numStats but stats.statsd.processing_time
            self._num_stats = join(internal, "numStats")
        else:
            self._num_stats = join(s.global_prefix, internal, "numStats")
        self._processing_time = join(s.global_prefix, internal, "processing_time")
        self._threshold_names = []
        for pct in s.percent_thresholds:
            clean = _js_number(pct).replace(".", "_", 1).replace("-", "top", 1)
            bound = "upper_" if pct > 0 else "lower_"
            self._threshold_names.append((pct, tuple(f"{stat}_{clean}" for stat in (
                "count", "mean", bound.rstrip("_"), "sum", "sum_squares"))))
        # the most bytes a flush adds to a key: "<namespace>." and ".<suffix>"
        namespaces = (self._counter_rate_ns, self._counter_count_ns, self._timer_ns, self._gauge_ns, self._set_ns)
        suffixes = ["rate", "count", "count_ps", "sum_squares", "median"]
        suffixes += [name for _, names in self._threshold_names for name in names]
        suffixes += ["histogram." + name for spec in s.histograms for name in spec.names]
        self._name_overhead = (max(len(ns.encode("utf-8")) + 1 for ns in namespaces)
                               + max(len(suffix.encode("utf-8")) + 1 for suffix in suffixes))

    @staticmethod
    def _format(namespace: str, key: str, suffix: str = "") -> str:
        """etsy's graphite name: namespace, the key's name, the suffix, then its ``;tags``."""
        name, semicolon, tags = key.partition(";")
        path = f"{namespace}.{name}" if namespace else name
        if suffix:
            path = f"{path}.{suffix}"
        return f"{path};{tags}" if semicolon else path

    def flush(self) -> tuple[list[str], list[float]]:
        """This interval's Graphite points as parallel (names, values); resets the interval."""
        started = time.perf_counter()
        s = self.settings
        interval = s.flush_interval
        names: list[str] = []
        values: list[float] = []
        add_name, add_value = names.append, values.append
        fmt = self._format
        legacy = s.legacy_namespace
        rate_ns, count_ns = self._counter_rate_ns, self._counter_count_ns

        counters = dict(self.counters)
        for internal, count in zip(self._internal_counters,
                                   (self.packets_received, self.metrics_received, self.bad_lines_seen)):
            counters[internal] = counters.get(internal, 0.0) + count
        for key, count in counters.items():
            if legacy:
                add_name(fmt(rate_ns, key))
                add_name(fmt(count_ns, key))
            else:
                add_name(fmt(rate_ns, key, "rate"))
                add_name(fmt(count_ns, key, "count"))
            add_value(count / interval)
            add_value(count)

        timer_ns = self._timer_ns
        for key, samples in self.timers.items():
            stats = self._timer_stats(key, samples, self.timer_counts.get(key, 0.0), interval)
            for stat, value in stats:
                add_name(fmt(timer_ns, key, stat))
                add_value(value)

        gauge_ns = self._gauge_ns
        for key, value in self.gauges.items():
            add_name(fmt(gauge_ns, key))
            add_value(value)
        set_ns = self._set_ns
        for key, members in self.sets.items():
            add_name(fmt(set_ns, key, "count"))
            add_value(float(len(members)))

        num_stats = len(counters) + len(self.timers) + len(self.gauges) + len(self.sets)
        add_name(self._num_stats)
        add_value(float(num_stats))
        add_name(self._processing_time)
        add_value((time.perf_counter() - started) * 1000.0)
        self._reset()

        if not math.isfinite(math.fsum(abs(v) for v in values)):  # rare: an overflow to inf
            kept = [(n, v) for n, v in zip(names, values) if math.isfinite(v)]
            self.totals.nonfinite_dropped += len(names) - len(kept)
            names, values = [n for n, _ in kept], [v for _, v in kept]
        self.totals.flushes += 1
        self.totals.points_flushed += len(names)
        return names, values

    def _timer_stats(self, key: str, samples: list[float], count_weighted: float,
                     interval: float) -> list[tuple[str, float]]:
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
        for pct, stat_names in self._threshold_names:
            in_threshold = count
            if count > 1:
                in_threshold = _js_round(abs(pct) / 100 * count)
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
        spec = self._histogram_for(key)
        if spec is not None:
            index = 0
            for edge, name in zip(spec.edges, spec.names):
                start = index
                while index < count and ordered[index] < edge:  # strict <; inf takes the rest
                    index += 1
                out.append(("histogram." + name, float(index - start)))
        return out

    def _histogram_for(self, key: str) -> Optional[HistogramSpec]:
        for spec in self.settings.histograms:
            if spec.metric in key:
                return spec
        return None

    def _reset(self) -> None:
        """Start the next interval as etsy does (keep idle keys at zero, or forget them)."""
        self.packets_received = self.metrics_received = self.bad_lines_seen = 0
        if self.settings.delete_idle_stats:
            self.counters = {}
            self.timers = {}
            self.timer_counts = {}
            self.sets = {}
            self.gauges = {}  # etsy's gaugesMaxTTL 1: a gauge not updated this interval goes
        else:
            self.counters = dict.fromkeys(self.counters, 0.0)
            self.timers = {key: [] for key in self.timers}
            self.timer_counts = dict.fromkeys(self.timer_counts, 0.0)
            self.sets = {key: set() for key in self.sets}


def _js_round(x: float) -> int:
    """JavaScript's Math.round: halves go up (Python's round() goes to even)."""
    return math.floor(x + 0.5)
