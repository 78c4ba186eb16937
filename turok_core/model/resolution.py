"""Resolutions as Turok writes them (``20sec``, ``1min``, ``5min``, ``1h``, ``1d``) and as seconds."""
from __future__ import annotations

import re

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "y": 31536000, "year": 31536000, "years": 31536000,
}
_RESOLUTION_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")
SECONDS_PER_DAY = 86400


def parse_duration(text: str, default_unit: str = "s") -> int:
    """Parse ``20sec``, ``1min``, ``10s``, ``7d``, ``60`` (bare number: ``default_unit``) into seconds."""
    match = _RESOLUTION_RE.match(text.lower())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    count, unit = int(match.group(1)), match.group(2) or default_unit
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r} in {text!r}")
    seconds = count * _UNITS[unit]
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


def parse_resolution(text: str) -> int:
    """Parse a resolution name (``20sec``, ``1min``, ``1h``, ``1d``) into seconds."""
    return parse_duration(text)


def format_resolution(seconds: int) -> str:
    """Write a step in seconds the way Turok names resolutions: 20 → ``20sec``, 300 → ``5min``."""
    if seconds <= 0:
        raise ValueError(f"resolution must be positive: {seconds}")
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}sec"
