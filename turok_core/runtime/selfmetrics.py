"""Self-metrics: a service's counters turned into points under ``turok.agents.<agent>.<service>.*``.

Like carbon's ``carbon.agents.<host>.*``: every interval a service reports what it did since the
previous report. A *counter* (a monotonic total in a counters dataclass) is reported as its
increase over the interval, so each point is "how many in that interval" and a sum over a time
range is the total for that range; a *gauge* (a current size: open windows, queue lag) is
reported as its value at report time. Pure code: the services own the timer and the sink.
"""
from __future__ import annotations

import dataclasses
import re
import resource
import socket
from typing import TYPE_CHECKING, Mapping, Optional

from turok_core.model.config import TurokConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

AGENTS_ROOT = "turok.agents"
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")

Points = tuple[list[str], list[float], list[int]]  # parallel names, values, timestamps


def node(text: str) -> str:
    """One safe metric-path node: dots, spaces and other separators become ``_``."""
    return _UNSAFE.sub("_", text) or "_"


def agent_name(config: TurokConfig, hostname: Optional[str] = None) -> str:
    """``config.agent_name``, else the host name with dots as underscores (as carbon does)."""
    name = config.agent_name or (hostname if hostname is not None else socket.gethostname())
    return node(name)


def metric_prefix(config: TurokConfig, service: str, hostname: Optional[str] = None) -> str:
    """``turok.agents.<agent>.<service>``, the root of one service's self-metrics."""
    return f"{AGENTS_ROOT}.{agent_name(config, hostname)}.{node(service)}"


def flatten_counters(counters: DataclassInstance) -> dict[str, float]:
    """A counters dataclass as ``{name: value}``; a dict field ``f`` gives ``f.<key>`` entries
    (e.g. ``points_by_protocol.plaintext_tcp``), so new protocols join without new fields."""
    flat: dict[str, float] = {}
    for item in dataclasses.fields(counters):
        value = getattr(counters, item.name)
        if isinstance(value, Mapping):
            for key, sub in value.items():
                if isinstance(sub, (int, float)) and not isinstance(sub, bool):
                    flat[f"{item.name}.{node(str(key))}"] = sub
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[item.name] = value
    return flat


def process_counters() -> dict[str, float]:
    """This process's CPU seconds used (a counter, so it reports CPU seconds per interval)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": usage.ru_utime + usage.ru_stime}


def process_gauges() -> dict[str, float]:
    """This process's resident memory in bytes (current where /proc tells it, else the peak)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            pages = int(handle.read().split()[1])
        return {"memory_rss_bytes": pages * resource.getpagesize()}
    except (OSError, ValueError, IndexError):
        return {"memory_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


class SelfMetricsReporter:
    """Turns successive counter snapshots into points: counter increases and gauge values.

    The first report counts from zero (services start with zeroed counters). A counter that went
    down (a restart of whatever it counts) reports its new value, never a negative increase.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._previous: dict[str, float] = {}

    def report(self, now: float, counters: Mapping[str, float],
               gauges: Optional[Mapping[str, float]] = None) -> Points:
        """Points stamped ``int(now)``: one per counter (its increase) and one per gauge."""
        previous = self._previous
        prefix = self.prefix
        names: list[str] = []
        values: list[float] = []
        for name, total in counters.items():
            before = previous.get(name, 0)
            names.append(f"{prefix}.{name}")
            values.append(total - before if total >= before else total)
        self._previous = dict(counters)
        for name, value in (gauges or {}).items():
            names.append(f"{prefix}.{name}")
            values.append(value)
        timestamp = int(now)
        return names, [float(v) for v in values], [timestamp] * len(names)

