"""Carbon's whisper tree → metric names, the way carbon stores and graphite-web reads them.

``a/b/c.wsp`` under a whisper directory is ``a.b.c``; a tagged series is stored by carbon
(``TaggedSeries.encode``) as ``_tagged/<3 hex>/<3 hex>/<name with . as _DOT_>.wsp``, so its
name is the file name with ``_DOT_`` turned back into dots. Names then go through Turok's
metric-name rule (``model/metric_names.py``): one the rule refuses is reported, not imported.
Files not ending in ``.wsp`` are carbon's business (locks, ceres, notes) and are left out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from turok_core.model.metric_names import normalise

WHISPER_SUFFIX = ".wsp"
TAGGED_DIR = "_tagged"


@dataclass(frozen=True)
class TreeFile:
    path: str  # absolute
    name: str  # metric name (not yet checked by the name rule)


def name_for(relative: str) -> str:
    """The metric name of a whisper file at ``relative`` (``/``-separated) below the tree's root."""
    stem = relative[:-len(WHISPER_SUFFIX)] if relative.endswith(WHISPER_SUFFIX) else relative
    parts = stem.split("/")
    if parts[0] == TAGGED_DIR and len(parts) == 4:
        return parts[3].replace("_DOT_", ".")
    return ".".join(parts)


def clean_name(name: str, max_bytes: int) -> str:
    """``name`` as Turok stores it; raises ``MetricNameError`` when the rule refuses it."""
    return normalise(name, max_bytes)


def walk(root: str) -> Iterator[TreeFile]:
    """Every ``.wsp`` file below ``root`` (a directory, or a single file), in a stable order."""
    root = os.path.abspath(root)
    if os.path.isfile(root):
        yield TreeFile(root, name_for(os.path.basename(root)))
        return
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for file_name in sorted(files):
            if file_name.endswith(WHISPER_SUFFIX):
                path = os.path.join(directory, file_name)
                relative = os.path.relpath(path, root).replace(os.sep, "/")
                yield TreeFile(path, name_for(relative))
