"""deploy/Dockerfile and .dockerignore, parsed with BuildKit's own parser (`dockerfile`)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

dockerfile = pytest.importorskip("dockerfile")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def stages() -> dict[str, list[Any]]:
    """Stage name -> its instructions (FROM first)."""
    out: dict[str, list[Any]] = {}
    current: list[Any] = []
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd == "FROM":
            current = [cmd]
            out[cmd.value[2] if len(cmd.value) == 3 else f"#{len(out)}"] = current
        else:
            current.append(cmd)
    return out


def instructions(stage: list[Any], name: str) -> list[Any]:
    return [c for c in stage if c.cmd == name]


def test_worker_is_the_default_target_and_train_exists() -> None:
    names = list(stages())
    assert names[-1] == "worker"  # `docker build` without --target builds the last stage
    assert "train" in names


def test_base_image_is_python_311_slim() -> None:
    first = dockerfile.parse_file(str(DOCKERFILE))[0]
    assert first.cmd == "ARG" and first.value == ("PYTHON_IMAGE=python:3.11-slim",)


def test_worker_stage() -> None:
    worker = stages()["worker"]
    (user,) = instructions(worker, "USER")
    assert user.value[0].split(":")[0] not in ("0", "root")
    (entry,) = instructions(worker, "ENTRYPOINT")
    assert entry.value == ("iotad", "run")
    (expose,) = instructions(worker, "EXPOSE")
    assert expose.value == ("9108",)
    (health,) = instructions(worker, "HEALTHCHECK")
    assert health.value[0] == "CMD" and health.value[1] == "python"
    code = health.value[3]
    assert "/healthz" in code and "urllib" in code
    compile(code, "HEALTHCHECK", "exec")


def build_chain(name: str) -> list[list[Any]]:
    """The stage `name` and the stages it is built FROM, base first."""
    s = stages()
    chain = [s[name]]
    while chain[0][0].value[0] in s:
        chain.insert(0, s[chain[0][0].value[0]])
    return chain


def built_from(runtime: str) -> list[Any]:
    """Every instruction, in build order, of the stage whose venv `runtime` copies."""
    (copy,) = instructions(stages()[runtime], "COPY")
    source = copy.flags[0].removeprefix("--from=")
    return [c for stage in build_chain(source) for c in stage if c.cmd != "FROM"]


def pip_installs(steps: list[Any]) -> list[str]:
    return [c.value[0] for c in steps if c.cmd == "RUN" and "pip install" in c.value[0]]


def test_worker_installs_no_extras_and_train_installs_train() -> None:
    worker_pip = pip_installs(built_from("worker"))
    train_pip = pip_installs(built_from("train"))
    assert worker_pip and train_pip
    # base deps: no TensorFlow
    assert all("[" not in cmd and "--extra" not in cmd for cmd in worker_pip)
    assert any("requirements --extra train" in cmd for cmd in train_pip)


@pytest.mark.parametrize("runtime", ["worker", "train"])
def test_dependencies_are_installed_before_the_sources_are_copied(runtime: str) -> None:
    """The dependency layer is cached while only detector/ or training/ change."""
    steps = built_from(runtime)
    copies = [i for i, c in enumerate(steps) if c.cmd == "COPY"]
    sources = [i for i in copies if {"detector", "training"} & set(steps[i].value[:-1])]
    installs = [i for i, c in enumerate(steps) if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert len(sources) == 2 and len(installs) == 2
    deps, package = installs
    assert deps < min(sources) and package > max(sources)
    # before the dependencies: only what decides them
    before = {s for i in copies if i < deps for s in steps[i].value[:-1]}
    assert before == {"pyproject.toml", "deploy/constraints.txt", "deploy/constraints.py"}
    assert "-c constraints.txt" in steps[deps].value[0]
    assert "--no-deps" in steps[package].value[0] and "pip check" in steps[package].value[0]
    assert "--no-deps" not in steps[deps].value[0]


def test_the_requirements_step_prints_pyprojects_dependencies(tmp_path: Path) -> None:
    import subprocess
    import sys
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # as in the image: the script beside pyproject.toml, the standard library only
    for name in ("pyproject.toml", "deploy/constraints.py"):
        (tmp_path / Path(name).name).write_bytes((ROOT / name).read_bytes())
    for extra, expected in (
        ([], project["dependencies"]),
        (["--extra", "train"], project["dependencies"] + project["optional-dependencies"]["train"]),
    ):
        out = subprocess.run(
            [sys.executable, "-I", "constraints.py", "requirements", *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.splitlines() == expected


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: last match wins, ! re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        ):
            result = not negate
    return result


def test_copied_sources_exist_and_are_not_dockerignored() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in stages().values():
        for copy in instructions(stage, "COPY"):
            if copy.flags:  # --from=another stage
                continue
            for source in copy.value[:-1]:
                assert (ROOT / source).exists(), source
                assert not ignored(source, patterns), f"{source} is excluded by .dockerignore"
    assert ignored("tests/deploy/test_dockerfile.py", patterns)
    assert ignored("detector/__pycache__/x.pyc", patterns)
    assert ignored(".venv/bin/python", patterns)
