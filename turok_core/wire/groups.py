"""The columnar shape the SQS codec encodes without building a message object per window.

A producer that keeps its windows grouped (the gateway's ``WindowBuffer``) hands
``codec.encode_messages`` an object satisfying ``GroupedWindows``: its ``groups`` are
``WindowGroup``s, one per slot, step and aggregation, each mapping a metric name to the window's
value when it holds one, else to the list of its values in arrival order. The codec encodes
them group by group as they are; anything else it reads as an iterable of ``TurokMessage``.
The wire defines this shape so it depends on no producer: producers build it.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Protocol, Sequence, Union

Window = Union[float, list[float]]  # a window's value when it holds one, else its values in order


class WindowGroup(NamedTuple):
    """The windows of one slot, step and aggregation: metric -> its value when the window holds
    one, else the list of its values in arrival order."""
    slot: int
    step: int
    aggregation: str
    windows: Mapping[str, Window]


class GroupedWindows(Protocol):
    """Windows already grouped for the codec (``WindowBuffer.release`` gives one); the codec
    takes any object with a ``groups`` attribute for one."""
    groups: Sequence[WindowGroup]
