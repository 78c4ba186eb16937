"""Turok's optional C extensions, loaded one way: each is a speed-up of a pure-Python reference.

``load_extension("turok_core.parse._speedups")`` gives the module, or None when it was not built
(no C compiler at install time) or ``TUROK_PURE_PYTHON=1`` asks for the references everywhere;
callers then run the pure-Python code, which produces the same results.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional


def load_extension(name: str) -> Optional[ModuleType]:
    """The extension module ``name``, or None when it is missing or pure Python is forced."""
    if os.environ.get("TUROK_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
