"""``iotad train --from``: a continued model keeps its parent's shape, weights to start from
and, where the new data fits, its normalisation; the report says what it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.cli import main
from detector.engine.artifact import SeriesScale, load_artifact
from tests.conftest import TINY_SERIES, TINY_START_TS, TINY_STEP_S, tiny_value
from training.continuation import fits


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([10.0, 20.0], True),  # the stored range itself
        ([7.5, 22.5], True),  # widened by 0.25 of the span (10) on each side
        ([7.4, 15.0], False),
        ([15.0, 22.6], False),
    ],
)
def test_new_data_fits_within_the_stored_range_and_margin(
    values: list[float], expected: bool
) -> None:
    scale = SeriesScale(offset=15.0, scale=3.0, low=10.0, high=20.0)
    assert fits(scale, np.array(values), margin=0.25) is expected


def test_a_parent_without_a_stored_range_never_fits() -> None:
    assert not fits(SeriesScale(15.0, 3.0), np.array([15.0]))


def _new_history(path: Path, n: int = 400) -> Path:
    """line1/temperature as before (fits), line2/temperature retrofitted (+40, leaves its
    range), a new line3/pressure; line1/vibration has no new data."""
    rng = np.random.default_rng(7)
    lines = ["ts,device,metric,value"]
    plan = {
        "line1/temperature": lambda i: tiny_value("line1/temperature", i),
        "line2/temperature": lambda i: tiny_value("line2/temperature", i) + 40.0,
        "line3/pressure": lambda i: 3.0 + 0.5 * np.sin(i / 7.0),
    }
    for key, signal in plan.items():
        device, metric = key.split("/")
        for i in range(n):
            ts = TINY_START_TS + (2000 + i) * TINY_STEP_S
            lines.append(f"{ts:.0f},{device},{metric},{signal(i) + rng.normal(0, 0.1):.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_train_from_an_artifact_continues_it(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = load_artifact(tiny_artifact)
    out = tmp_path / "child"
    status = main(
        [
            "train", str(_new_history(tmp_path / "new.csv")), "--from", str(tiny_artifact),
            "--out", str(out), "--epochs", "1", "--quiet", "--no-plots",
            "--alert-budget", "0", "--export-batch-sizes", "1,8",
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err
    child = load_artifact(out)
    assert child.version != parent.version
    # The parent's shape.
    assert (child.window_len, child.cell, child.units) == (parent.window_len, "lstm", (8,))
    # Fits: the parent's normalisation, exactly.
    kept, old = child.series_scales["line1/temperature"], parent.series_scales["line1/temperature"]
    assert (kept.offset, kept.scale) == (old.offset, old.scale)
    # Left its range: refit around the new level (20 + 5 * 2 before, + 40 now).
    refit = child.series_scales["line2/temperature"]
    assert refit.offset == pytest.approx(70.0, abs=1.0)
    assert "line3/pressure" in child.series_scales
    # No new data: served as before, calibration included.
    absent = "line1/vibration"
    assert child.series_scales[absent] == parent.series_scales[absent]
    assert child.series_errors[absent] == parent.series_errors[absent]
    report = json.loads((out / "report.json").read_text())
    section = report["training"]["continued_from"]
    assert section["version"] == parent.version
    assert section["normalisation"] == {
        "kept": ["line1/temperature"],
        "refit": ["line2/temperature"],
        "added": ["line3/pressure"],
        "parent_only": ["line1/vibration"],
    }
    assert child.training["continued_from"]["version"] == parent.version
    assert f"continued from {parent.version}" in printed.out
    assert set(TINY_SERIES) <= set(child.series_scales)


def test_a_continued_model_cannot_change_its_shape(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "train", str(_new_history(tmp_path / "new.csv")), "--from", str(tiny_artifact),
            "--out", str(tmp_path / "child"), "--window", "64", "--quiet", "--no-plots",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("iotad train: error: window 64 differs from the model being continued")
    assert not (tmp_path / "child").exists()


def test_a_parent_safe_mode_would_refuse_is_one_line(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before any data or TensorFlow is loaded."""
    import shutil
    import zipfile

    parent = tmp_path / "parent"
    shutil.copytree(tiny_artifact, parent)
    with zipfile.ZipFile(parent / "model.keras", "w") as z:
        config = {"class_name": "Functional", "config": {"layers": [{"class_name": "Lambda"}]}}
        z.writestr("config.json", json.dumps(config))
    status = main(
        [
            "train", str(_new_history(tmp_path / "new.csv")), "--from", str(parent),
            "--out", str(tmp_path / "child"), "--quiet", "--no-plots",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip().splitlines() == [
        f"iotad train: failed: {parent / 'model.keras'}: a Lambda layer carries code; "
        "safe mode refuses it"
    ]
    assert not (tmp_path / "child").exists()
