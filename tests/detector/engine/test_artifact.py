"""The artifact reader on hand-written documents: what it accepts, and each way it refuses.

No TensorFlow here: the model files are placeholders, the reader only checks they exist.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detector.engine.artifact import (
    SCHEMA_VERSION,
    ArtifactError,
    ErrorStats,
    SeriesScale,
    load_artifact,
    parse_artifact,
)


def valid_doc() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "version": "20261128T093000Z-0123abcd",
        "created_at": "2026-11-28T09:30:00Z",
        "code_version": "iotad 0.1.0",
        "model": {"cell": "lstm", "units": [32, 16], "layers": 2, "bidirectional": False},
        "window_len": 32,
        "horizon": 1,
        "features": ["value", "tod_sin", "tod_cos"],
        "scaling": {
            "method": "standard",
            "per_series": {
                "press1/temp": {"offset": 20.0, "scale": 2.5, "low": 14.0, "high": 27.5},
                "press2/temp": {"offset": 21.0, "scale": 2.0},  # no range: older artifacts
            },
            "default": {"offset": 0.0, "scale": 1.0},
        },
        "calibration": {
            "per_series": {
                "press1/temp": {
                    "mean": 0.01,
                    "std": 0.2,
                    "abs_quantiles": {"0.5": 0.1, "0.9": 0.3, "0.99": 0.5, "0.999": 0.7},
                    "n": 100,
                    "abs_mean": 0.16,
                    "abs_std": 0.12,
                }
            },
            "global": {
                "mean": 0.0,
                "std": 0.25,
                "abs_quantiles": {"0.5": 0.12, "0.9": 0.35, "0.99": 0.6, "0.999": 0.8},
                "n": 400,
            },
        },
        "files": {
            "keras": "model.keras",
            "tflite": {"1": "model_b1.tflite", "64": "model.tflite"},
        },
        "training": {"rows_total": 500},
        "metrics": {"val_loss": 0.05},
    }


def write(directory: Path, doc: Any, files: tuple[str, ...] = ("model.tflite",)) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else json.dumps(doc)
    (directory / "artifact.json").write_text(text, encoding="utf-8")
    for name in ("model.keras", "model_b1.tflite", *files):
        (directory / name).write_bytes(b"placeholder")
    return directory


def test_a_valid_document_loads_with_every_field(tmp_path: Path) -> None:
    art = load_artifact(write(tmp_path / "a", valid_doc()))
    assert art.schema_version == SCHEMA_VERSION
    assert art.version == "20261128T093000Z-0123abcd"
    assert art.cell == "lstm" and art.units == (32, 16) and art.bidirectional is False
    assert art.window_len == 32 and art.horizon == 1
    assert art.features == ("value", "tod_sin", "tod_cos") and art.n_features == 3
    assert art.scaling_method == "standard"
    assert art.scale_for("press1/temp") == SeriesScale(20.0, 2.5, 14.0, 27.5)
    assert art.scale_for("press2/temp") == SeriesScale(21.0, 2.0, None, None)
    assert art.scale_for("press9/temp") is None
    assert art.default_scale == SeriesScale(0.0, 1.0)
    assert art.errors_for("press1/temp") == ErrorStats(
        0.01, 0.2, {"0.5": 0.1, "0.9": 0.3, "0.99": 0.5, "0.999": 0.7}, 100, 0.16, 0.12
    )
    pooled = art.errors_for("unseen/x")  # falls back to the pooled statistics
    assert pooled.std == 0.25 and pooled.abs_mean is None and pooled.abs_std is None
    assert art.batch_sizes == (1, 64)
    assert art.tflite_path(64) == (tmp_path / "a" / "model.tflite").resolve()
    assert art.keras_path == (tmp_path / "a" / "model.keras").resolve()
    assert art.training == {"rows_total": 500} and art.metrics == {"val_loss": 0.05}


def test_default_scale_may_be_left_out(tmp_path: Path) -> None:
    doc = valid_doc()
    del doc["scaling"]["default"]
    assert load_artifact(write(tmp_path / "a", doc)).default_scale == SeriesScale(0.0, 1.0)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets (or with value `...` deletes) a dotted field of the document."""

    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return edit


# (edit, words the one-line message must contain)
INVALID = {
    "unknown schema": (_set("schema_version", 99), ["unknown schema_version 99"]),
    "schema as text": (_set("schema_version", "1"), ["schema_version", "wrong type"]),
    "missing version": (_set("version", ...), ["missing field", "version"]),
    "missing model": (_set("model", ...), ["missing field", "model"]),
    "missing window_len": (_set("window_len", ...), ["missing field", "window_len"]),
    "missing calibration global": (
        _set("calibration.global", ...),
        ["missing field", "global"],
    ),
    "unknown cell": (_set("model.cell", "transformer"), ["model.cell", "transformer"]),
    "no units": (_set("model.units", []), ["model.units"]),
    "bool units": (_set("model.units", [True]), ["model.units"]),
    "zero window": (_set("window_len", 0), ["window_len"]),
    "horizon 2": (_set("horizon", 2), ["horizon 2"]),
    "features not led by value": (_set("features", ["tod_sin", "value"]), ["features"]),
    "unknown feature": (_set("features", ["value", "humidity"]), ["humidity"]),
    "unknown scaling": (_set("scaling.method", "robust"), ["scaling.method", "robust"]),
    "zero scale": (
        _set("scaling.per_series", {"a/b": {"offset": 0.0, "scale": 0.0}}),
        ["scale must be positive"],
    ),
    "NaN offset": (
        _set("scaling.per_series", {"a/b": {"offset": float("nan"), "scale": 1.0}}),
        ["offset", "not a finite number"],
    ),
    "infinite low": (
        _set("scaling.per_series", {"a/b": {"offset": 0.0, "scale": 1.0, "low": float("-inf")}}),
        ["a/b].low", "not a finite number"],
    ),
    "abs_mean as text": (
        _set("calibration.global.abs_mean", "small"),
        ["global.abs_mean", "not a finite number"],
    ),
    "negative std": (_set("calibration.global.std", -1.0), ["std must not be negative"]),
    "negative n": (_set("calibration.global.n", -3), ["n must be a non-negative integer"]),
    "no tflite": (_set("files.tflite", {}), ["no LiteRT model"]),
    "batch not a number": (
        _set("files.tflite", {"many": "model.tflite"}),
        ["batch size 'many'"],
    ),
    "tflite escapes upwards": (
        _set("files.tflite", {"64": "../x.tflite"}),
        ["'../x.tflite'", "plain file name"],
    ),
    "tflite in a subfolder": (
        _set("files.tflite", {"64": "sub/model.tflite"}),
        ["'sub/model.tflite'"],
    ),
    "tflite absolute": (_set("files.tflite", {"64": "/etc/passwd"}), ["'/etc/passwd'"]),
    "keras escapes": (_set("files.keras", ".."), ["'..'"]),
    "top level is a list": (lambda doc: None, ["JSON object"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_each_kind_of_invalid_document_is_refused_with_one_line(tmp_path: Path, case: str) -> None:
    edit, words = INVALID[case]
    doc: Any = copy.deepcopy(valid_doc())
    edit(doc)
    if case == "top level is a list":
        doc = [doc]
    text = json.dumps(doc)  # NaN is written as NaN, which Python's json reads back
    with pytest.raises(ArtifactError) as info:
        load_artifact(write(tmp_path / "a", text))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_corrupt_json_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    directory = write(tmp_path / "a", '{\n  "schema_version": 1,\n  "version": \n}')
    with pytest.raises(ArtifactError, match=r"artifact\.json is corrupt \(invalid JSON at line 4"):
        load_artifact(directory)


def test_truncated_json_is_refused(tmp_path: Path) -> None:
    text = json.dumps(valid_doc())[:200]
    with pytest.raises(ArtifactError, match="corrupt"):
        load_artifact(write(tmp_path / "a", text))


def test_missing_directory_missing_json_and_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="is not a directory"):
        load_artifact(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"artifact\.json is missing"):
        load_artifact(tmp_path / "empty")
    directory = write(tmp_path / "a", valid_doc())
    (directory / "model.tflite").unlink()
    with pytest.raises(ArtifactError, match=r"model\.tflite is missing"):
        load_artifact(directory)
    # Reading the metadata alone does not need the model files.
    assert load_artifact(directory, check_files=False).batch_sizes == (1, 64)


def test_parse_artifact_takes_a_decoded_document(tmp_path: Path) -> None:
    art = parse_artifact(valid_doc(), tmp_path)
    assert art.directory == tmp_path and art.units == (32, 16)
    with pytest.raises(ArtifactError, match="JSON object"):
        parse_artifact("not a dict", tmp_path)
