"""StatsD lines applied to one flush interval's state, with the etsy reference implementation's semantics.

``StatsdAggregator.apply_datagram`` takes one whole datagram (or a chunk of complete TCP lines)
and applies every line in one loop: the chunk is decoded and split once, key sanitising is
cached per raw key. With the C extension (``turok_core.parse.native``) the clean lines of keys
seen before (``key:value|c``, ``ms``, ``h``, ``g``, with a sample rate or not) are applied in C
first, up to the first line it leaves to this code; the extension reads and writes the
aggregator's ``_keys``, ``counters``, ``timers``, ``timer_counts`` and ``gauges`` dicts, so
those keep their names and shapes. ``StatsdAggregator.flush`` returns what etsy's graphite
backend would send at a flush (computed by ``turok_core.statsd.flush``) as parallel
``names``/``values`` lists, then resets the state for the next interval (counters to 0, timers
and sets emptied, gauges kept; with ``delete_idle_stats`` keys are forgotten instead, so idle
keys send nothing).

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

import math
import re
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from turok_core.model.metric_names import NameRule
from turok_core.parse.batch import MAX_BAD_EXAMPLES
from turok_core.parse.native import speedups as _native
from turok_core.statsd.flush import FlushNames, drop_nonfinite, flush_points
from turok_core.statsd.settings import StatsdSettings

BAD_EXAMPLE_CHARS = 200  # StatsD keeps its examples as text, cut like the parsers' bytes
KEY_CACHE_SIZE = 200_000  # raw key -> sanitised key; cleared when full

_SPACES = re.compile(r"\s+")
_NOT_KEY_CHAR = re.compile(r"[^a-zA-Z_\-0-9.;=]")
_TIMER_TYPES = frozenset(("ms", "h"))


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
    """One flush interval's StatsD state; ``apply_datagram`` datagrams, ``flush`` at each interval."""
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
        self.flush_names = FlushNames.from_settings(self.settings)
        self.name_rule = NameRule(self.settings.max_metric_name_bytes)
        # keys leave room for the longest namespace and suffix a flush can add
        room = self.settings.max_metric_name_bytes - self.flush_names.name_overhead
        if room < 1:
            raise ValueError(f"max_metric_name_bytes {self.settings.max_metric_name_bytes} leaves no room for "
                             f"StatsD keys after {self.flush_names.name_overhead} bytes of prefixes and suffixes")
        self._key_rule = NameRule(room)

    # --- input ---------------------------------------------------------------------------------
    def apply_datagram(self, data: bytes, packets: int = 1) -> int:
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
    def flush(self) -> tuple[list[str], list[float]]:
        """This interval's Graphite points as parallel (names, values); resets the interval."""
        started = time.perf_counter()
        names, values = flush_points(self, self.settings, self.flush_names, started)
        self._reset()
        names, values, dropped = drop_nonfinite(names, values)  # rare: an overflow to inf
        self.totals.nonfinite_dropped += dropped
        self.totals.flushes += 1
        self.totals.points_flushed += len(names)
        return names, values

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

