"""`detector.worker.model_reload`: when a reload is due, what is checked, and that a failure keeps
the running core (the worker-level behaviour is tests/integration/test_model_reload.py)."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.engine.artifact import SCHEMA_VERSION, Artifact, ArtifactError, load_artifact
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from detector.worker.metrics import WorkerMetrics
from detector.worker.model_reload import ModelReloader, check_keras_safe
from tests.detector.core_fixtures import LastValueForecaster

CFG = DetectionConfig(learn_readings=5)
GOOD_LAYER = {"module": "keras.layers", "class_name": "LSTM", "config": {"units": 4}}


def write_artifact(directory: Path, version: str, layers: list | None = None) -> Path:
    """A loadable artifact directory (LiteRT files are placeholders: the test forecaster
    never reads them)."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "version": version,
        "created_at": "2026-11-30T00:00:00Z",
        "code_version": "iotad test",
        "model": {"cell": "lstm", "units": [4]},
        "window_len": 3,
        "horizon": 1,
        "features": ["value"],
        "scaling": {"method": "standard", "per_series": {"d/m": {"offset": 0.0, "scale": 1.0}}},
        "calibration": {
            "per_series": {},
            "global": {"mean": 0.0, "std": 1.0, "abs_quantiles": {}, "n": 10},
        },
        "files": {"keras": "model.keras", "tflite": {"1": "model_b1.tflite"}},
    }
    (directory / "artifact.json").write_text(json.dumps(doc))
    (directory / "model_b1.tflite").write_bytes(b"placeholder")
    config = {"module": "keras.src.models.functional", "class_name": "Functional",
              "config": {"layers": layers if layers is not None else [GOOD_LAYER]}}  # fmt: skip
    with zipfile.ZipFile(directory / "model.keras", "w") as z:
        z.writestr("config.json", json.dumps(config))
    return directory


def build(artifact: Artifact) -> DetectionCore:
    return DetectionCore(artifact, LastValueForecaster(), CFG)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reloader(path: Path, registry: CollectorRegistry, clock: Clock, every: float = 1.0):  # type: ignore[no-untyped-def]
    return ModelReloader(path, build, WorkerMetrics(registry), check_every_s=every, clock=clock)


def failures(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("iotad_model_reload_failures_total") or 0.0


def test_a_new_artifact_is_due_once_it_has_settled(tmp_path: Path, registry) -> None:  # type: ignore[no-untyped-def]
    path = write_artifact(tmp_path / "model", "v1")
    clock = Clock()
    r = reloader(path, registry, clock)
    clock.now = 1.0
    assert not r.due()  # nothing changed
    write_artifact(path, "v2")
    clock.now = 1.5
    assert not r.due()  # not time to look yet
    clock.now = 2.0
    assert not r.due()  # changed: seen once, may still be copying
    clock.now = 3.0
    assert r.due()  # the same change seen twice


def test_sighup_makes_it_due_at_once(tmp_path: Path, registry) -> None:  # type: ignore[no-untyped-def]
    r = reloader(write_artifact(tmp_path / "model", "v1"), registry, Clock(), every=0)
    assert not r.due()
    r.request()
    assert r.due()


def test_a_new_version_swaps_with_the_state_and_the_metrics(tmp_path: Path, registry) -> None:  # type: ignore[no-untyped-def]
    path = write_artifact(tmp_path / "model", "v1")
    old = build(load_artifact(path))
    old.process([Reading("d", "m", 100.0 + i, float(i % 3)) for i in range(10)], now=200.0)
    r = reloader(path, registry, Clock())
    write_artifact(path, "v2")
    new = r.reload(old)
    assert new is not None and new.artifact.version == "v2"
    assert new.active_series == 1 and new.warming_series == 0
    assert registry.get_sample_value("iotad_model_reloads_total") == 1
    info = {"version": "v2", "cell": "lstm", "window": "3"}
    assert registry.get_sample_value("iotad_model_info", info) == 1
    assert registry.get_sample_value("iotad_model_info", {**info, "version": "v1"}) is None
    # The same version again: nothing to do, not a failure.
    assert r.reload(new) is None and failures(registry) == 0


def test_a_bad_artifact_keeps_the_core_and_is_not_retried(
    tmp_path: Path, registry, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    path = write_artifact(tmp_path / "model", "v1")
    core = build(load_artifact(path))
    clock = Clock()
    r = reloader(path, registry, clock)
    (path / "artifact.json").write_text("{broken")
    with caplog.at_level(logging.INFO, logger="iotad.reload"):
        assert r.reload(core) is None
    assert failures(registry) == 1
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 1 and "model v1 keeps running" in lines[0] and "corrupt" in lines[0]
    for step in range(1, 5):  # the same broken files: never due again
        clock.now = float(step)
        assert not r.due()


@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        ([{"module": "keras.layers", "class_name": "Lambda", "config": {}}], "Lambda"),
        ([{"module": "evil.layers", "class_name": "Boom", "config": {}}], "evil.layers"),
        ([{"class_name": "__lambda__", "config": {"code": "x"}}], "__lambda__"),
    ],
)
def test_keras_files_safe_mode_would_refuse_are_refused(
    tmp_path: Path, layers: list, reason: str
) -> None:
    artifact = load_artifact(write_artifact(tmp_path / "a", "v1", layers))
    with pytest.raises(ArtifactError, match=reason):
        check_keras_safe(artifact)


def test_a_safe_keras_file_passes_and_a_non_zip_does_not(tmp_path: Path) -> None:
    artifact = load_artifact(write_artifact(tmp_path / "a", "v1"))
    check_keras_safe(artifact)
    artifact.keras_path.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match=r"not a readable \.keras file"):
        check_keras_safe(artifact)


def test_a_forecaster_that_fails_on_a_window_is_refused(tmp_path: Path, registry) -> None:  # type: ignore[no-untyped-def]
    class NaNForecaster:
        def predict(self, windows: np.ndarray) -> np.ndarray:
            return np.full(windows.shape[0], np.nan, dtype=np.float32)

    path = write_artifact(tmp_path / "model", "v1")
    core = build(load_artifact(path))
    r = ModelReloader(
        path,
        lambda art: DetectionCore(art, NaNForecaster(), CFG),
        WorkerMetrics(registry),
        check_every_s=0,
    )
    write_artifact(path, "v2")
    assert r.reload(core) is None and failures(registry) == 1
