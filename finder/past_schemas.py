"""Reading a metric whose schema files were edited: each part of a range from where it is stored.

Nothing is rewritten when an operator edits the schema files: data written before stays in the
day tables of the resolutions it was written at. So for a metric with more than one policy in
the schema history (``model/schema_history.py``) the finder reads, besides the window whisper's
rule picks from the current archives, the window each older policy's archives would give, and
merges them, newest policy first:

- an older policy's window is read only if data can have been written under it there (the
  window starts before that policy ended, plus ``OLD_DATA_SLACK`` for windows still in flight)
  and some day table exists at its step for a day of the window (``TableCatalog``: ListTables,
  cached), so old resolutions whose tables the keeper has dropped cost nothing;
- parts that hold no value are left out; with one part left, the answer is that part as it is
  (an edited metric with nothing stored before the edit reads exactly like any other);
- otherwise the answer has the finest step among the parts, from the earliest start to the
  latest end, and each slot takes the newest policy's value where it has one, else an older
  one's; a coarser part's value fills each finer slot it covers, which is what graphite-web does
  when it merges two archives of different steps (``MultiReader``), so both parts show at their
  own resolution.
"""
from __future__ import annotations

from typing import Optional, Sequence

from finder.reader import Window, archive_window
from turok_core.model.schema_history import PastPolicy
from turok_core.storage.table_catalog import TableCatalog

OLD_DATA_SLACK = 86400  # seconds after an edit during which data may still arrive at the old steps

Part = tuple[Window, Optional[list]]  # a window and its values (None: nothing read)


def past_windows(past: Sequence[PastPolicy], start_time: float, end_time: Optional[float], now: float,
                 catalog: TableCatalog) -> list[Window]:
    """The windows to read for a metric with these policies (newest first; module doc)."""
    windows: list[Window] = []
    for index, item in enumerate(past):
        window = archive_window(start_time, end_time, now, item.policy.archives)
        if window is None or window in windows:
            continue
        if index and (window.start >= item.until + OLD_DATA_SLACK
                      or not catalog.has_any(window.step, window.start, window.end)):
            continue
        windows.append(window)
    return windows


def merge_parts(parts: Sequence[Part]) -> tuple[tuple[int, int, int], list]:
    """One graphite series ``((start, end, step), values)`` from parts read newest first."""
    held = [(window, values) for window, values in parts if values is not None and any(v is not None for v in values)]
    if len(held) <= 1:
        window, values = held[0] if held else parts[0]
        points = (window.end - window.start) // window.step
        return tuple(window), list(values) if values is not None else [None] * points
    step = min(window.step for window, _values in held)
    start = min(window.start for window, _values in held)
    start -= start % step
    end = max(window.end for window, _values in held)
    end += -end % step
    merged: list = [None] * ((end - start) // step)
    for window, values in reversed(held):  # oldest first: newer values overwrite
        assert values is not None
        for index, value in enumerate(values):
            if value is None:
                continue
            slot = window.start + index * window.step
            first = max(0, -(-(slot - start) // step))
            last = min(len(merged), -(-(slot + window.step - start) // step))
            for position in range(first, last):
                merged[position] = value
    return (start, end, step), merged
