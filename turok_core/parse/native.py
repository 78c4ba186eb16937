"""The optional C extension ``turok_core.parse._speedups``: the gateway's per-point parsing for clean input.

``speedups`` is the extension module, or None when it was not built (no C compiler) or
``TUROK_PURE_PYTHON=1`` is set (as msgpack's ``MSGPACK_PUREPYTHON``): the pure-Python parsers
then do all the work, with the same results, several times slower. Every function of the
extension answers None for input it does not take on, and the Python code decides; so the
extension never changes what is accepted or refused, only how fast clean input goes.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional

from turok_core.model.extensions import load_extension

speedups: Optional[ModuleType] = load_extension("turok_core.parse._speedups")


def describe() -> str:
    """For start-up logs: which parser implementation this process runs."""
    return "C speedups" if speedups is not None else "pure Python (turok_core.parse._speedups not built or disabled)"
