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


def test_worker_installs_no_extras_and_train_installs_train() -> None:
    s = stages()
    (copy_worker,) = instructions(s["worker"], "COPY")
    (copy_train,) = instructions(s["train"], "COPY")
    worker_build = s[copy_worker.flags[0].removeprefix("--from=")]
    train_build = s[copy_train.flags[0].removeprefix("--from=")]
    worker_pip = [
        c.value[0] for c in instructions(worker_build, "RUN") if "pip install" in c.value[0]
    ]
    train_pip = [
        c.value[0] for c in instructions(train_build, "RUN") if "pip install" in c.value[0]
    ]
    assert worker_pip and all("[" not in cmd for cmd in worker_pip)  # base deps: no TensorFlow
    assert any(".[train]" in cmd for cmd in train_pip)


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
