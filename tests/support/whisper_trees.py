"""Whisper files and carbon trees for the import tests, made with the ``whisper`` module itself."""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Sequence

NOW = 1_700_000_000 - 1_700_000_000 % 86400 + 7 * 3600 + 17  # 07:00:17 UTC, mid-slot

# values of every kind: integers, negatives, decimals, full-precision doubles, huge, tiny, -0.0, infinities
SPECIAL_VALUES = [0.0, -0.0, 1.0, -7.0, 0.1, 3.141592653589793, 1e300, -1e-300, 5e-324, 2.0 ** 53 + 2,
                  math.inf, -math.inf, 123456.789]


def value_of(rng: random.Random, kind: str) -> float:
    if kind == "int":
        return float(rng.randint(-1000, 1000))
    if kind == "decimal":
        return round(rng.uniform(-100, 100), 2)
    if kind == "double":
        return rng.uniform(-1e6, 1e6)
    return rng.choice(SPECIAL_VALUES)


def make_file(path: Path, archives: Sequence[tuple[int, int]], aggregation: str, xff: float, seed: int,
              days: float, density: float = 0.8, kind: str = "decimal", now: int = NOW) -> list[tuple[int, float]]:
    """A whisper file at ``path`` with ``days`` of points up to ``now`` (a share ``density`` of the
    slots, in gappy runs), written the way carbon writes them: oldest first, in chunks."""
    import whisper

    os.makedirs(path.parent, exist_ok=True)
    whisper.create(str(path), list(archives), xFilesFactor=xff, aggregationMethod=aggregation)
    rng = random.Random(seed)
    step = archives[0][0]
    oldest = now - int(days * 86400)
    points = []
    t = oldest - oldest % step + step
    while t < now:
        if rng.random() < density:
            run = rng.randint(1, 30)
            points += [(t + i * step, value_of(rng, kind)) for i in range(run) if t + i * step < now]
            t += run * step
        else:
            t += rng.randint(1, 20) * step
    write_as_carbon(path, points)
    return points


def write_as_carbon(path: Path, points: Sequence[tuple[int, float]], every: int = 600) -> None:
    """Write ``points`` (in time order) as carbon's cache flushes them: every ``every`` seconds
    the points of that while, each flush at its own "now"."""
    import whisper

    chunk: list[tuple[int, float]] = []
    for point in points:
        if chunk and point[0] // every != chunk[0][0] // every:
            whisper.update_many(str(path), chunk, now=chunk[-1][0] + 1)
            chunk = []
        chunk.append(point)
    if chunk:
        whisper.update_many(str(path), chunk, now=chunk[-1][0] + 1)


def carbon_path(root: Path, name: str) -> Path:
    """Where carbon stores ``name`` below its whisper directory ``root`` (tagged names hashed)."""
    from carbon.util import TaggedSeries

    return root / (TaggedSeries.encode(name, sep=os.sep) + ".wsp")
