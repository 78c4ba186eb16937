"""The design's wire form of a time, ``01-04-2014 14:35:00`` (UTC, day first), and UTC days."""
from __future__ import annotations

import calendar
import time

WIRE_FORMAT = "%d-%m-%Y %H:%M:%S"
DAY_FORMAT = "%d-%m-%Y"


def to_wire_time(epoch: int) -> str:
    """Epoch seconds → ``DD-MM-YYYY HH:MM:SS`` in UTC."""
    return time.strftime(WIRE_FORMAT, time.gmtime(epoch))


def from_wire_time(text: str) -> int:
    """``DD-MM-YYYY HH:MM:SS`` (UTC) → epoch seconds."""
    return calendar.timegm(time.strptime(text.strip(), WIRE_FORMAT))


def day_name(epoch: int) -> str:
    """The UTC day holding ``epoch`` as ``DD-MM-YYYY``."""
    return time.strftime(DAY_FORMAT, time.gmtime(epoch))


def parse_day_name(text: str) -> int:
    """``DD-MM-YYYY`` → epoch seconds of that UTC midnight."""
    return calendar.timegm(time.strptime(text, DAY_FORMAT))


def day_start(epoch: float) -> int:
    """Epoch seconds of the UTC midnight at or before ``epoch``."""
    epoch = int(epoch // 1)
    return epoch - epoch % 86400
