"""artifact.json's `device_models` entries: what the reader accepts and each way it refuses.

The documents are tests/detector/engine/test_artifact.py's valid one (window_len 32) with a
`device_models` list; model files are placeholders (the reader only checks they exist).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from detector.engine.artifact import ArtifactError, DeviceModelEntry, load_artifact, parse_artifact
from tests.detector.engine.test_artifact import valid_doc, write

ENTRY = {"metrics": ["current", "temperature"], "window": 16, "file": "device_0.npz"}


def doc_with(*entries: Any) -> dict[str, Any]:
    doc = valid_doc()
    doc["device_models"] = [copy.deepcopy(e) for e in entries]
    return doc


def with_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = dict(ENTRY)
    for key, value in changes.items():
        if value is ...:
            del entry[key]
        else:
            entry[key] = value
    return doc_with(entry)


def test_a_valid_entry_is_read(tmp_path: Path) -> None:
    second = {"metrics": ["a", "b", "c"], "window": 32, "file": "device_1.npz"}
    directory = write(
        tmp_path / "a",
        json.dumps(doc_with(ENTRY, second)),
        files=("model.tflite", "device_0.npz", "device_1.npz"),
    )
    artifact = load_artifact(directory)
    assert artifact.device_models == (
        DeviceModelEntry(("current", "temperature"), 16, "device_0.npz"),
        DeviceModelEntry(("a", "b", "c"), 32, "device_1.npz"),
    )
    path = artifact.device_model_path(artifact.device_models[0])
    assert path == (directory / "device_0.npz").resolve()


def test_window_one_and_eight_metrics_are_the_bounds(tmp_path: Path) -> None:
    entry = {"metrics": list("abcdefgh"), "window": 1, "file": "d.npz"}
    artifact = parse_artifact(doc_with(entry), tmp_path)
    assert artifact.device_models[0].metrics == tuple("abcdefgh")
    assert artifact.device_models[0].window == 1


def test_no_device_models_is_an_empty_tuple(tmp_path: Path) -> None:
    assert parse_artifact(valid_doc(), tmp_path).device_models == ()
    doc = valid_doc()
    doc["device_models"] = []
    assert parse_artifact(doc, tmp_path).device_models == ()


# (document, words the message must contain)
INVALID: dict[str, tuple[dict[str, Any], list[str]]] = {
    "not a list": ({**valid_doc(), "device_models": {"0": ENTRY}}, ["device_models"]),
    "entry not an object": (doc_with(["a", "b"]), ["device_models[0]"]),
    "metrics missing": (with_entry(metrics=...), ["device_models[0]", "metrics"]),
    "metrics not a list": (with_entry(metrics="current,temperature"), ["metrics"]),
    "one metric": (with_entry(metrics=["current"]), ["device_models[0].metrics"]),
    "no metrics": (with_entry(metrics=[]), ["device_models[0].metrics"]),
    "nine metrics": (with_entry(metrics=list("abcdefghi")), ["device_models[0].metrics"]),
    "unsorted metrics": (with_entry(metrics=["temperature", "current"]), ["metrics"]),
    "duplicate metrics": (with_entry(metrics=["current", "current"]), ["metrics"]),
    "empty metric name": (with_entry(metrics=["", "current"]), ["metrics"]),
    "metric not a string": (with_entry(metrics=[1, 2]), ["metrics"]),
    "window missing": (with_entry(window=...), ["window"]),
    "window 0": (with_entry(window=0), ["device_models[0].window"]),
    "window negative": (with_entry(window=-1), ["device_models[0].window"]),
    "window over window_len": (with_entry(window=33), ["device_models[0].window", "32"]),
    "window as text": (with_entry(window="16"), ["window", "wrong type"]),
    "window as float": (with_entry(window=16.0), ["window", "wrong type"]),
    "window as bool": (with_entry(window=True), ["window", "wrong type"]),
    "file missing": (with_entry(file=...), ["file"]),
    "file escapes upwards": (with_entry(file="../device_0.npz"), ["'../device_0.npz'"]),
    "file in a subfolder": (with_entry(file="sub/device_0.npz"), ["'sub/device_0.npz'"]),
    "file absolute": (with_entry(file="/etc/passwd"), ["'/etc/passwd'"]),
    "file is the directory's parent": (with_entry(file=".."), ["'..'"]),
    "file empty": (with_entry(file=""), ["''"]),
    "file with a backslash": (with_entry(file="..\\x.npz"), ["x.npz"]),
    "file not a string": (with_entry(file=3), ["file", "wrong type"]),
    "duplicate signature": (
        doc_with(ENTRY, {**ENTRY, "file": "device_1.npz", "window": 8}),
        ["two models for one metric signature"],
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_each_bad_entry_is_refused(tmp_path: Path, case: str) -> None:
    doc, words = INVALID[case]
    with pytest.raises(ArtifactError) as info:
        parse_artifact(copy.deepcopy(doc), tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    # load_artifact refuses it the same way.
    with pytest.raises(ArtifactError):
        load_artifact(
            write(tmp_path / "a", json.dumps(doc), files=("model.tflite", "device_0.npz"))
        )


def test_a_missing_model_file_is_refused_at_load(tmp_path: Path) -> None:
    directory = write(tmp_path / "a", json.dumps(doc_with(ENTRY)))  # no device_0.npz
    with pytest.raises(ArtifactError, match=r"device_0\.npz is missing"):
        load_artifact(directory)
    # Without the file check the document itself is fine.
    assert load_artifact(directory, check_files=False).device_models[0].file == "device_0.npz"


def test_a_directory_in_place_of_the_model_file_is_refused(tmp_path: Path) -> None:
    directory = write(tmp_path / "a", json.dumps(doc_with(ENTRY)))
    (directory / "device_0.npz").mkdir()
    with pytest.raises(ArtifactError, match=r"device_0\.npz is missing"):
        load_artifact(directory)
