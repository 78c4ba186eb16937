"""The optional C extension ``turok_core.storage._blockcodec``: block format v2 for whole blocks.

``blockcodec`` is the extension module, or None when it was not built (no C compiler) or
``TUROK_PURE_PYTHON=1`` is set: ``block_codec.py``, the reference that defines the format, then
does the same work with the same bytes, many times slower.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional

from turok_core.model.extensions import load_extension

blockcodec: Optional[ModuleType] = load_extension("turok_core.storage._blockcodec")


def describe() -> str:
    """For start-up logs: which block codec this process runs."""
    return "C" if blockcodec is not None else "pure Python (turok_core.storage._blockcodec not built or disabled)"
