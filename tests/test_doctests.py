"""Docstring examples run: every module of `detector` and `training` with a ``>>>`` example.

Modules are found by reading the sources, so an example added to a new module runs without
being listed here. None of them imports TensorFlow at import time (training/models.py imports
it inside its functions), which keeps this test fast.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_with_examples() -> list[str]:
    found = []
    for package in ("detector", "training"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8"):
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


MODULES = _modules_with_examples()


def test_the_known_examples_are_found() -> None:
    known = {
        "detector.worker.alertmanager",
        "detector.worker.lineprotocol",
        "training.data",
        "training.models",
    }
    assert known <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.attempted > 0, f"{name} has '>>>' but doctest found no example"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (above)"
