"""The one loader of Turok's optional C extensions."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from turok_core.model.extensions import load_extension

SETUP = Path(__file__).resolve().parents[2] / "setup.py"


def test_a_built_extension_loads_and_a_missing_one_is_none(monkeypatch):
    monkeypatch.delenv("TUROK_PURE_PYTHON", raising=False)
    assert load_extension("json") is json
    assert load_extension("turok_core.parse._no_such_extension") is None


def test_pure_python_forced_by_the_environment(monkeypatch):
    monkeypatch.setenv("TUROK_PURE_PYTHON", "1")
    assert load_extension("json") is None
    monkeypatch.setenv("TUROK_PURE_PYTHON", "0")
    assert load_extension("json") is json


@pytest.mark.skipif(os.environ.get("TUROK_PURE_PYTHON", "0") not in ("", "0"), reason="pure Python forced")
def test_every_extension_setup_builds_is_built():
    """``make install`` brings the compiler and builds every extension in place; the C-versus-
    reference tests skip when one is missing, so a failed build must fail here, not pass quietly."""
    names = re.findall(r'Extension\("([\w.]+)"', SETUP.read_text())
    assert len(names) >= 3
    assert [name for name in names if load_extension(name) is None] == []
