"""Day-table names: ``<prefix><joiner><DD-MM-YYYY><joiner><resolution>``, e.g. ``turok_01-04-2014_20sec``."""
from __future__ import annotations

from typing import NamedTuple, Optional

from turok_core.model.resolution import format_resolution, parse_resolution
from turok_core.model.timefmt import day_name, day_start, parse_day_name


class TableName(NamedTuple):
    day: int  # epoch seconds of the UTC midnight the table holds
    step: int  # resolution in seconds


def table_name(prefix: str, joiner: str, epoch: float, step: int) -> str:
    """The table holding the UTC day of ``epoch`` at resolution ``step``."""
    return f"{prefix}{joiner}{day_name(day_start(epoch))}{joiner}{format_resolution(step)}"


def parse_table_name(name: str, prefix: str, joiner: str) -> Optional[TableName]:
    """The day and step of a Turok table name, or None for a name Turok did not make."""
    head = prefix + joiner
    if not joiner or not name.startswith(head):
        return None
    # the date has a fixed width and may itself hold the joiner (``-``): cut by position
    rest = name[len(head):]
    day_text, separator, resolution_text = rest[:10], rest[10:10 + len(joiner)], rest[10 + len(joiner):]
    if separator != joiner or not resolution_text:
        return None
    try:
        day, step = parse_day_name(day_text), parse_resolution(resolution_text)
    except ValueError:
        return None
    if table_name(prefix, joiner, day, step) != name:  # refuse non-canonical spellings
        return None
    return TableName(day, step)
