"""Writing a model artifact that `detector.engine.artifact.load_artifact` accepts, atomically.

Everything is written into a hidden staging directory next to the target and renamed into
place at the very end, after the artifact has been read back with the worker's own loader,
so a crash or a failed check never leaves a half-written artifact where the worker looks.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detector import __version__
from detector.engine.artifact import ARTIFACT_JSON, SCHEMA_VERSION, Artifact, load_artifact
from training.models import ModelSpec

KERAS_FILE = "model.keras"


class ArtifactWriteError(Exception):
    """The artifact cannot be written where it was asked to go."""


def artifact_doc(
    *,
    version: str,
    created_at: str,
    spec: ModelSpec,
    features: tuple[str, ...],
    scaling_method: str,
    scales: dict[str, tuple[float, float]],
    ranges: dict[str, tuple[float, float]],
    periods: dict[str, int | None],
    repeat_runs: dict[str, int | None],
    calibration_per_series: dict[str, dict[str, object]],
    calibration_global: dict[str, object],
    tflite_files: dict[int, str],
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The ``artifact.json`` document, laid out as `detector.engine.artifact.parse_artifact`
    reads it."""
    return {
        "schema_version": SCHEMA_VERSION,
        "version": version,
        "created_at": created_at,
        "code_version": f"iotad {__version__}",
        "model": spec.as_json(),
        "window_len": spec.window_len,
        "horizon": 1,
        "features": list(features),
        "scaling": {
            "method": scaling_method,
            # low/high: the raw range seen in training, for the worker's range check.
            "per_series": {
                key: {
                    "offset": offset,
                    "scale": scale,
                    "low": ranges[key][0],
                    "high": ranges[key][1],
                    # readings per season, for the worker's seasonal forecast (or null)
                    "period": periods.get(key),
                    # longest run of exact repeats: what a stuck sensor must outlast
                    "repeat_run": repeat_runs.get(key),
                }
                for key, (offset, scale) in sorted(scales.items())
            },
            # Unseen series are normalised online by the worker; this is the identity.
            "default": {"offset": 0.0, "scale": 1.0},
        },
        "calibration": {"per_series": calibration_per_series, "global": calibration_global},
        "files": {
            "keras": KERAS_FILE,
            "tflite": {str(b): name for b, name in sorted(tflite_files.items())},
        },
        "training": training,
        "metrics": metrics,
    }


def write_json(path: Path, doc: Any) -> None:
    """Write `doc` as strict JSON (NaN or infinity is a bug, not something to write)."""
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def check_target(target: Path) -> None:
    """Refuse a target that exists and is neither empty nor an earlier artifact."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ArtifactWriteError(f"output {target} exists and is not a directory")
    if any(target.iterdir()) and not (target / ARTIFACT_JSON).is_file():
        raise ArtifactWriteError(
            f"output {target} is a non-empty directory that is not a model artifact; "
            "choose another --out"
        )


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh hidden directory beside `target`, removed again if the block fails."""
    check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise ArtifactWriteError(f"cannot create {target.parent}: {exc.strerror or exc}") from exc
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def self_check(directory: Path) -> Artifact:
    """Read the artifact back with the worker's loader (raises `ArtifactError` if it fails)."""
    return load_artifact(directory)


def publish(staged: Path, target: Path) -> Path:
    """Move the staged artifact to `target`, replacing an earlier artifact there."""
    check_target(target)
    old: Path | None = None
    if target.exists():
        old = staged.with_name(staged.name + ".old")
        target.rename(old)
    staged.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
