"""Carbon's whisper tree → metric names, the way carbon stores and graphite-web reads them.

``a/b/c.wsp`` under a whisper directory is ``a.b.c``; a tagged series is stored by carbon
(``TaggedSeries.encode``) as ``_tagged/<3 hex>/<3 hex>/<name with . as _DOT_>.wsp``, so its
name is the file name with ``_DOT_`` turned back into dots (a tagged series stored under its hash
alone, carbon's ``TAG_HASH_FILENAMES``, has no name to read). Names then go through Turok's
metric-name rule (``model/metric_names.py``): one the rule refuses is reported, not imported.
Files not ending in ``.wsp`` are carbon's business (locks, ceres, notes) and are left out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from turok_core.model.metric_names import TAG_SEPARATOR, MetricNameError, normalise

WHISPER_SUFFIX = ".wsp"
TAGGED_DIR = "_tagged"


@dataclass(frozen=True)
class TreeFile:
    path: str  # absolute
    relative: str  # below the tree's root, /-separated: ``name_for`` makes the metric name of it


def name_for(relative: str) -> str:
    """The metric name of a whisper file at ``relative`` (``/``-separated) below the tree's root;
    raises ``MetricNameError`` for a tagged series stored under its hash alone (carbon's
    ``TAG_HASH_FILENAMES``), whose name is not in the tree."""
    stem = relative[:-len(WHISPER_SUFFIX)] if relative.endswith(WHISPER_SUFFIX) else relative
    parts = stem.split("/")
    if parts[0] == TAGGED_DIR and len(parts) == 4:
        if TAG_SEPARATOR not in parts[3]:
            raise MetricNameError("a tagged series stored under its hash (carbon's TAG_HASH_FILENAMES): "
                                  "its name is not in the tree")
        return parts[3].replace("_DOT_", ".")
    return ".".join(parts)


def metric_name(tree_file: TreeFile, max_bytes: int) -> str:
    """The file's metric name as Turok stores it; raises ``MetricNameError`` when there is none
    or the rule refuses it."""
    return normalise(name_for(tree_file.relative), max_bytes)


def walk(root: str) -> Iterator[TreeFile]:
    """Every ``.wsp`` file below ``root`` (a directory, or a single file), in a stable order."""
    root = os.path.abspath(root)
    if os.path.isfile(root):
        yield TreeFile(root, os.path.basename(root))
        return
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for file_name in sorted(files):
            if file_name.endswith(WHISPER_SUFFIX):
                path = os.path.join(directory, file_name)
                yield TreeFile(path, os.path.relpath(path, root).replace(os.sep, "/"))
