"""The import's progress line on stderr: files, points, write units, rate and ETA.

On a terminal one line is redrawn at most every ``interval`` seconds; elsewhere (a log, a pipe)
a line is printed every ``log_interval`` seconds. No dependency beyond the standard library.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


def _count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts what is done and shows it; ``finish`` prints the last line."""

    def __init__(self, total_files: int, stream: Optional[TextIO] = None, interval: float = 0.5,
                 log_interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_files = total_files
        self.files = self.points = self.write_units = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval if self._tty else log_interval
        self._clock = clock
        self._started = clock()
        self._shown = self._started

    def add(self, files: int, points: int, write_units: int) -> None:
        self.files += files
        self.points += points
        self.write_units += write_units
        now = self._clock()
        if now - self._shown >= self._interval:
            self._shown = now
            self._show(now)

    def line(self, now: Optional[float] = None) -> str:
        """The progress line as it is shown."""
        elapsed = max(1e-9, (self._clock() if now is None else now) - self._started)
        rate = self.files / elapsed
        left = self.total_files - self.files
        eta = _duration(left / rate) if rate > 0 else "?"
        share = 100.0 * self.files / self.total_files if self.total_files else 100.0
        bar_width = 20
        bar = "#" * int(bar_width * share / 100) + "." * (bar_width - int(bar_width * share / 100))
        return (f"[{bar}] {share:5.1f}% files {self.files}/{self.total_files}  points {_count(self.points)}  "
                f"write units {_count(self.write_units)}  {rate:.0f} files/s  ETA {eta}")

    def _show(self, now: float) -> None:
        if self._tty:
            self._stream.write("\r" + self.line(now) + "\x1b[K")
        else:
            self._stream.write(self.line(now) + "\n")
        self._stream.flush()

    def finish(self) -> None:
        now = self._clock()
        self._show(now)
        if self._tty:
            self._stream.write("\n")
        self._stream.flush()
