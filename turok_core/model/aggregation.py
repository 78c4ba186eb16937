"""The five aggregation types a Turok message can name, and carbon's names for them."""
from __future__ import annotations

import math
from typing import Callable, Sequence

AGGREGATION_TYPES = ("sum", "average", "minimum", "maximum", "last")

# carbon's storage-aggregation.conf names → the design's names
_CARBON_NAMES = {
    "average": "average", "avg": "average",
    "sum": "sum",
    "min": "minimum", "minimum": "minimum",
    "max": "maximum", "maximum": "maximum",
    "last": "last",
}


def _average(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _last(values: Sequence[float]) -> float:
    return values[-1]


AGGREGATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": math.fsum,
    "average": _average,
    "minimum": min,
    "maximum": max,
    "last": _last,
}


def normalise_aggregation(name: str) -> str:
    """Map a carbon or Turok aggregation name to one of ``AGGREGATION_TYPES``."""
    try:
        return _CARBON_NAMES[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown aggregation {name!r}; expected one of average, sum, min, max, last"
        ) from None


def aggregate(aggregation_type: str, values: Sequence[float]) -> float:
    """Reduce a non-empty sequence of values with the named aggregation (in arrival order)."""
    return AGGREGATORS[aggregation_type](values)
