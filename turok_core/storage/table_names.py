"""Day-table names: ``<prefix><joiner><DD-MM-YYYY><joiner><resolution>``, e.g. ``turok_01-04-2014_20sec``.

DynamoDB refuses a table name of other characters than letters, digits, ``_``, ``-`` and ``.``
or longer than 255 (moto takes any): ``check_table_affixes`` refuses a prefix and joiner that
would make such names, so a store refuses them when made, not at every write.
"""
from __future__ import annotations

import math
import string
from typing import NamedTuple, Optional

from turok_core.model.resolution import SECONDS_PER_DAY, format_resolution, parse_resolution
from turok_core.model.timefmt import day_name, day_start, parse_day_name

TABLE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-.")
MAX_TABLE_NAME = 255
# what follows the prefix and joiners in the longest day-table name: the date, the longest
# resolution (a step divides a day: each divisor below its square root names two)
_LONGEST_TAIL = len("DD-MM-YYYY") + max(
    len(format_resolution(step)) for low in range(1, math.isqrt(SECONDS_PER_DAY) + 1)
    if SECONDS_PER_DAY % low == 0 for step in (low, SECONDS_PER_DAY // low))


class TableName(NamedTuple):
    day: int  # epoch seconds of the UTC midnight the table holds
    step: int  # resolution in seconds


def table_name(prefix: str, joiner: str, epoch: float, step: int) -> str:
    """The table holding the UTC day of ``epoch`` at resolution ``step``."""
    return f"{prefix}{joiner}{day_name(day_start(epoch))}{joiner}{format_resolution(step)}"


def check_table_affixes(prefix: str, joiner: str) -> None:
    """Raise ``ValueError`` unless every day-table name made of ``prefix`` and ``joiner`` is one
    DynamoDB accepts."""
    bad = sorted(set(prefix + joiner) - TABLE_NAME_CHARS)
    if bad:
        raise ValueError(f"table_prefix {prefix!r} and table_joiner {joiner!r}: DynamoDB table names hold only "
                         f"letters, digits, '_', '-' and '.', not {''.join(bad)!r}")
    longest = len(prefix) + 2 * len(joiner) + _LONGEST_TAIL
    if longest > MAX_TABLE_NAME:
        raise ValueError(f"table_prefix {prefix!r} and table_joiner {joiner!r} make day-table names of up to "
                         f"{longest} characters; DynamoDB takes at most {MAX_TABLE_NAME}")


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
