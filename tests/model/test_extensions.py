"""The one loader of Turok's optional C extensions."""
from __future__ import annotations

import json

from turok_core.model.extensions import load_extension


def test_a_built_extension_loads_and_a_missing_one_is_none(monkeypatch):
    monkeypatch.delenv("TUROK_PURE_PYTHON", raising=False)
    assert load_extension("json") is json
    assert load_extension("turok_core.parse._no_such_extension") is None


def test_pure_python_forced_by_the_environment(monkeypatch):
    monkeypatch.setenv("TUROK_PURE_PYTHON", "1")
    assert load_extension("json") is None
    monkeypatch.setenv("TUROK_PURE_PYTHON", "0")
    assert load_extension("json") is json
