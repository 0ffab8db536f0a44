"""deploy/constraints.txt: the images' pins cover every dependency they install."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
_spec = importlib.util.spec_from_file_location("deploy_constraints", DEPLOY / "constraints.py")
assert _spec and _spec.loader
constraints = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(constraints)

PINS = constraints.parse_pins((DEPLOY / "constraints.txt").read_text())
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_constraints_are_exact_pins() -> None:
    assert PINS
    for name, version in PINS.items():
        assert version and not any(c in version for c in "<>=!~*, "), f"{name}=={version}"


@pytest.mark.parametrize("extra", ["", *constraints.IMAGE_EXTRAS])
def test_every_runtime_dependency_is_pinned_within_its_range(extra: str) -> None:
    wanted = PROJECT["optional-dependencies"][extra] if extra else PROJECT["dependencies"]
    assert wanted
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in PINS, f"{name} ({line}) is not pinned in deploy/constraints.txt"
        assert req.specifier.contains(PINS[name], prereleases=True), (
            f"{name}=={PINS[name]} is outside pyproject's {line}"
        )


def test_the_pinned_tools_are_pinned_within_their_range() -> None:
    wanted = constraints.tool_requirements()
    assert [Requirement(line).name for line in wanted] == list(constraints.PINNED_TOOLS)
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in PINS, f"{name} ({line}) is not pinned in deploy/constraints.txt"
        assert req.specifier.contains(PINS[name]), f"{name}=={PINS[name]} is outside {line}"


def test_tool_requirements_names_a_missing_tool(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.optional-dependencies]\ndev = ["mypyc>=1", "ruff>=0.1"]\n')
    assert constraints.tool_requirements(pyproject, ["ruff"]) == ["ruff>=0.1"]
    with pytest.raises(SystemExit, match="mypy"):
        constraints.tool_requirements(pyproject, ["mypy"])


def test_the_image_extras_are_the_dockerfiles() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    extras = {w for line in text.splitlines() for w in line.split("--extra ")[1:]}
    assert {e.split()[0] for e in extras} == set(constraints.IMAGE_EXTRAS)


def test_everything_the_images_install_is_pinned() -> None:
    """The dependencies' own dependencies too, as installed here (the suite's environment)."""
    roots = constraints.requirements(extras=constraints.IMAGE_EXTRAS)
    roots += constraints.tool_requirements()
    try:
        installed = constraints.closure(roots)
    except SystemExit as exc:
        pytest.skip(f"not the full environment: {exc}")
    missing = sorted(set(installed) - set(PINS))
    assert missing == [], f"unpinned: {missing}; run `make constraints`"


def test_closure_follows_markers_and_extras(tmp_path: Path) -> None:
    """On distributions installed here: pip's own deps are none, pydantic brings its core."""
    pins = constraints.closure(["pydantic>=2"])
    assert {"pydantic", "pydantic-core", "annotated-types", "typing-extensions"} <= set(pins)
    # a marker that is false here is skipped, an extra nobody asked for is not followed
    assert constraints.closure(['numpy; sys_platform == "no-such-os"']) == {}
    with pytest.raises(SystemExit, match="not installed"):
        constraints.closure(["no-such-distribution-iotad"])


def test_render_and_parse_round_trip() -> None:
    text = constraints.render({"b-pkg": "2.0", "a-pkg": "1.0.post1"}, ["train"])
    assert text.splitlines()[-2:] == ["a-pkg==1.0.post1", "b-pkg==2.0"]
    assert "make constraints" in text
    assert constraints.parse_pins(text) == {"a-pkg": "1.0.post1", "b-pkg": "2.0"}
