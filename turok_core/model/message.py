"""The Turok message: one metric's raw values for one resolution-aligned window.

A message names ``metric``, ``start_time`` (the window's first second), ``datapoints`` (every
value that arrived for the window, in arrival order), ``resolution`` and ``aggregation_type``.
turokd reduces the datapoints with the named aggregation into the window's single stored slot.
In memory times are epoch seconds and resolutions are seconds; on the wire they take the
design's text forms (``01-04-2014 14:35:00``, ``20sec``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from turok_core.model.aggregation import AGGREGATION_TYPES
from turok_core.model.metric_names import MetricNameError, check_stored
from turok_core.model.resolution import format_resolution, parse_resolution
from turok_core.model.timefmt import from_wire_time, to_wire_time

WIRE_FIELDS = ("metric", "start_time", "datapoints", "resolution", "aggregation_type")


class MessageError(ValueError):
    """A message (or an SQS body carrying messages) that cannot be accepted, with the reason."""


@dataclass(slots=True)
class TurokMessage:
    metric: str
    start_time: int
    datapoints: list
    resolution: int
    aggregation_type: str

    def to_wire(self) -> dict[str, Any]:
        """The design's JSON-friendly form (text time and resolution, datapoints as a list)."""
        return {
            "metric": self.metric,
            "start_time": to_wire_time(self.start_time),
            "datapoints": list(self.datapoints),
            "resolution": format_resolution(self.resolution),
            "aggregation_type": self.aggregation_type,
        }


def validate_message(metric: Any, start_time: int, datapoints: Any, resolution: int,
                     aggregation_type: Any) -> TurokMessage:
    """Build a message from decoded parts, refusing anything turokd could not store."""
    try:  # the gateway sends names under the metric-name rule; anything else was not from it
        check_stored(metric)
    except MetricNameError as exc:
        raise MessageError(f"metric {str(metric)[:80]!r}: {exc}") from None
    if aggregation_type not in AGGREGATION_TYPES:
        raise MessageError(f"unknown aggregation_type {aggregation_type!r}")
    if not isinstance(datapoints, list) or not datapoints:
        raise MessageError(f"datapoints of {metric!r} must be a non-empty list")
    for value in datapoints:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MessageError(f"datapoints of {metric!r} hold a non-finite or non-number {value!r}")
    if start_time % resolution:
        raise MessageError(f"start_time of {metric!r} is not aligned to its resolution")
    return TurokMessage(metric, start_time, datapoints, resolution, aggregation_type)


def message_from_wire(fields: Mapping[str, Any]) -> TurokMessage:
    """Parse the design's form; ``datapoints`` may be a list or a JSON-encoded list string."""
    import json

    try:
        datapoints = fields["datapoints"]
        if isinstance(datapoints, str):
            datapoints = json.loads(datapoints)
        start_time = from_wire_time(fields["start_time"])
        resolution = parse_resolution(fields["resolution"])
        return validate_message(fields["metric"], start_time, datapoints, resolution,
                                fields["aggregation_type"])
    except MessageError:
        raise
    except KeyError as missing:
        raise MessageError(f"message lacks field {missing}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise MessageError(f"malformed message: {exc}") from None
