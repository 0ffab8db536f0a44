"""What a model artifact can make the worker load: only the LiteRT files artifact.json
names, only from inside the artifact directory (symlinks resolved), and Keras models only in
safe mode. tests/detector/engine/test_artifact.py covers ``..`` in names; this adds symlinks,
absolute paths, NUL bytes, extra files and the Keras calls.

No broker here: these read files only (apart from one worker start that must fail cleanly).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detector.engine.artifact import ARTIFACT_JSON, ArtifactError, load_artifact

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def artifact_copy(tiny_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny trained artifact that a test may tamper with."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "artifact"))


def tflite_names(directory: Path) -> dict[str, str]:
    return json.loads((directory / ARTIFACT_JSON).read_text())["files"]["tflite"]


def rename_model(directory: Path, batch: str, name: str) -> None:
    doc = json.loads((directory / ARTIFACT_JSON).read_text())
    doc["files"]["tflite"][batch] = name
    (directory / ARTIFACT_JSON).write_text(json.dumps(doc))


def test_a_model_file_symlinked_outside_the_directory_is_refused(
    artifact_copy: Path, tmp_path: Path
) -> None:
    batch, name = next(iter(tflite_names(artifact_copy).items()))
    outside = tmp_path / "elsewhere" / "evil.tflite"
    outside.parent.mkdir()
    shutil.move(artifact_copy / name, outside)
    (artifact_copy / name).symlink_to(outside)
    with pytest.raises(ArtifactError, match="escapes"):
        load_artifact(artifact_copy).tflite_path(int(batch))


def test_a_symlink_chain_that_ends_outside_is_refused(artifact_copy: Path, tmp_path: Path) -> None:
    batch, name = next(iter(tflite_names(artifact_copy).items()))
    outside = tmp_path / "evil.tflite"
    shutil.move(artifact_copy / name, outside)
    (artifact_copy / "hop.tflite").symlink_to(outside)
    (artifact_copy / name).symlink_to(artifact_copy / "hop.tflite")
    with pytest.raises(ArtifactError, match="escapes"):
        load_artifact(artifact_copy).tflite_path(int(batch))


def test_symlinks_that_stay_inside_are_fine(artifact_copy: Path, tmp_path: Path) -> None:
    # A model file linked to another file of the directory, and the directory itself
    # reached through a symlink (e.g. models/current -> models/v7).
    batch, name = next(iter(tflite_names(artifact_copy).items()))
    shutil.move(artifact_copy / name, artifact_copy / "real.tflite")
    (artifact_copy / name).symlink_to("real.tflite")
    current = tmp_path / "current"
    current.symlink_to(artifact_copy)
    art = load_artifact(current)
    assert art.tflite_path(int(batch)) == (artifact_copy / "real.tflite").resolve()


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../artifact/model.tflite", "sub/model.tflite", "a\\b.tflite", "a\0.tflite"],
)
def test_names_that_are_not_plain_file_names_are_refused(artifact_copy: Path, name: str) -> None:
    batch = next(iter(tflite_names(artifact_copy)))
    rename_model(artifact_copy, batch, name)
    with pytest.raises(ArtifactError, match="plain file name"):
        load_artifact(artifact_copy)


def test_a_model_file_in_a_subdirectory_via_symlink_is_refused(artifact_copy: Path) -> None:
    batch, name = next(iter(tflite_names(artifact_copy).items()))
    (artifact_copy / "sub").mkdir()
    shutil.move(artifact_copy / name, artifact_copy / "sub" / name)
    (artifact_copy / name).symlink_to(artifact_copy / "sub" / name)
    with pytest.raises(ArtifactError, match="escapes"):
        load_artifact(artifact_copy).tflite_path(int(batch))


def test_litert_opens_only_the_files_artifact_json_names(
    artifact_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_edge_litert import interpreter

    from detector.engine.forecaster import LiteRTForecaster

    (artifact_copy / "extra.tflite").write_bytes(b"not for loading")
    opened: list[str] = []
    real = interpreter.Interpreter

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(kwargs.get("model_path") or args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(interpreter, "Interpreter", spy)
    LiteRTForecaster.from_artifact(load_artifact(artifact_copy))
    named = {str((artifact_copy / n).resolve()) for n in tflite_names(artifact_copy).values()}
    assert set(opened) == named


def test_the_worker_refuses_an_escaping_artifact_in_one_line(
    artifact_copy: Path, tmp_path: Path
) -> None:
    _, name = next(iter(tflite_names(artifact_copy).items()))
    outside = tmp_path / "evil.tflite"
    shutil.move(artifact_copy / name, outside)
    (artifact_copy / name).symlink_to(outside)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTAD_")}
    env |= {"IOTAD_MODEL__PATH": str(artifact_copy), "IOTAD_METRICS__PORT": "0"}
    env |= {"IOTAD_METRICS__HOST": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "detector", "run", "--env-file", ""],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot load the model" in errors[0] and "escapes" in errors[0]
    assert "Traceback" not in out.stderr


def _load_model_calls() -> list[tuple[Path, ast.Call]]:
    calls = []
    for package in ("training", "detector", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = getattr(func, "attr", None) or getattr(func, "id", None)
                    if called == "load_model":
                        calls.append((path, node))
    return calls


def test_every_keras_load_model_call_uses_safe_mode() -> None:
    calls = _load_model_calls()
    assert calls, "no load_model call found: has training moved?"
    for path, call in calls:
        safe = [k for k in call.keywords if k.arg == "safe_mode"]
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        assert safe, f"{where}: load_model without safe_mode=True"
        value = safe[0].value
        assert isinstance(value, ast.Constant) and value.value is True, where


def test_the_worker_never_imports_keras_or_tensorflow() -> None:
    # The worker loads only LiteRT flatbuffers: no Keras deserialisation path at all.
    code = (
        "import sys, detector.worker.run_cli, detector.engine.forecaster, "
        "detector.engine.artifact, detector.worker.checkpoint, detector.worker.loop; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "[]"
