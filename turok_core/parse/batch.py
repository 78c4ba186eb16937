"""The batch type between the parse stage and the gateway: ``ParsedLines``, and the limits every
parser applies when filling one.

Each receiver's parser (carbon plaintext, carbon pickle, a StatsD flush) hands the gateway one
``ParsedLines`` per chunk: the good points as parallel ``names``/``values``/``timestamps`` lists,
how many lines were bad with a few examples (``MAX_BAD_EXAMPLES``, each cut at
``BAD_EXAMPLE_BYTES``), and the NaN values dropped silently. The gateway takes the points into its
windows and counts and logs the rest under the receiver's protocol. Before that, the batch can
apply Turok's metric-name rule (``apply_name_rule``) and refuse points outside the retention
(``drop_out_of_range``), both counting what they refuse as bad lines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from turok_core.model.metric_names import NameRule

MAX_BAD_EXAMPLES = 3
BAD_EXAMPLE_BYTES = 200
# 9999-12-31 23:59:59 UTC: later timestamps cannot be written in the wire time format
MAX_TIMESTAMP = 253402300799


@dataclass
class ParsedLines:
    """The good points of a chunk (parallel lists) and what was wrong with the rest."""
    names: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    bad: int = 0
    bad_examples: list[bytes] = field(default_factory=list)
    nan_dropped: int = 0

    def __len__(self) -> int:
        return len(self.names)

    def add_bad(self, line: bytes, count: int = 1, note: bytes = b"") -> None:
        """Count ``count`` bad lines, keeping ``line`` (truncated, then ``note``) as an example."""
        self.bad += count
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            example = bytes(line[:BAD_EXAMPLE_BYTES])
            if len(line) > BAD_EXAMPLE_BYTES:
                example += b"..."
            self.bad_examples.append(example + note)

    def apply_name_rule(self, rule: NameRule, joined: Optional[bytes] = None, longest: int = -1) -> int:
        """Rewrite the names by the metric-name rule, refusing (as bad lines) the points whose
        name it refuses; returns how many were refused. ``joined``/``longest``: see NameRule.clean."""
        names, kept, refused = rule.clean(self.names, joined, longest)
        self.names = names
        if kept is None:
            return 0
        self.values = [self.values[i] for i in kept]
        self.timestamps = [self.timestamps[i] for i in kept]
        name, why = refused[0]
        self.add_bad(name.encode("utf-8", "backslashreplace"), len(refused), b" (metric name: %s)" % why.encode())
        return len(refused)

    def drop_out_of_range(self, oldest: int, newest: int) -> int:
        """Refuse, as bad lines, points stamped before ``oldest`` or after ``newest``.

        Whisper drops points outside its retention; a point far ahead would sit in an open
        window until shutdown. The common case costs one ``min`` and one ``max``."""
        stamps = self.timestamps
        if not stamps or (min(stamps) >= oldest and max(stamps) <= newest):
            return 0
        keep = [i for i, t in enumerate(stamps) if oldest <= t <= newest]
        first = next(i for i, t in enumerate(stamps) if not oldest <= t <= newest)
        dropped = len(stamps) - len(keep)
        self.add_bad(b"%s %r %d" % (self.names[first].encode("utf-8"), self.values[first], stamps[first]),
                     dropped, b" (timestamp outside [now - longest retention, now + max_future_seconds])")
        self.names = [self.names[i] for i in keep]
        self.values = [self.values[i] for i in keep]
        self.timestamps = [stamps[i] for i in keep]
        return dropped
