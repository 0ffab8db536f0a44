"""The type checker runs in CI: mypy over `detector` and `training`, configured in pyproject.

`make lint` runs the same check; this test is how CI (`make test`) sees it. mypy keeps its
cache under .mypy_cache, so a run after a small change takes a second or two.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MYPY = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def test_mypy_reports_no_errors() -> None:
    assert importlib.util.find_spec("mypy") is not None, (
        "mypy is not installed: it is in the dev extra (`make test` installs it)"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-color-output", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"mypy found errors:\n{done.stdout}{done.stderr}"


def test_every_module_named_in_the_mypy_overrides_exists() -> None:
    """A renamed module would otherwise silently lose its strict checking."""
    first_party = [
        module
        for override in MYPY["overrides"]
        for module in override["module"]
        if module.split(".")[0] in ("detector", "training")
    ]
    assert "detector.engine.*" in first_party
    missing = [m for m in first_party if not _exists(m)]
    assert missing == []


def _exists(module: str) -> bool:
    """A module's file, or a package's folder for a ``package.*`` pattern."""
    path = ROOT / module.removesuffix(".*").replace(".", "/")
    if module.endswith(".*"):
        return (path / "__init__.py").is_file()
    return path.with_suffix(".py").is_file()


def test_the_pure_core_is_checked_strictly() -> None:
    strict = [o for o in MYPY["overrides"] if o.get("disallow_untyped_defs")]
    assert len(strict) == 1
    flags = ("disallow_any_generics", "warn_return_any", "disallow_untyped_calls")
    assert all(strict[0].get(flag) for flag in flags)
    # The whole engine package: a module added to the pure core is strict from its first line.
    assert "detector.engine.*" in strict[0]["module"]
