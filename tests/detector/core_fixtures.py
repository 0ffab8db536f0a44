"""Small artifacts and forecasters for testing the detection core without TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detector.engine.artifact import SCHEMA_VERSION, Artifact, parse_artifact
from detector.engine.core import DetectionCore
from detector.engine.events import AlertEvent
from detector.engine.readings import Reading


def make_artifact(
    window_len: int = 3,
    per_series: dict[str, tuple[float, float]] | None = None,
    errors: dict[str, tuple[float, float]] | None = None,
    global_error: tuple[float, float] = (0.0, 1.0),
    features: tuple[str, ...] = ("value",),
    method: str = "standard",
) -> Artifact:
    """An in-memory artifact: scales ``key -> (offset, scale)``, errors ``key -> (mean, std)``."""

    def err(mean: float, std: float) -> dict[str, Any]:
        return {"mean": mean, "std": std, "abs_quantiles": {}, "n": 100}

    doc = {
        "schema_version": SCHEMA_VERSION,
        "version": "test-model",
        "created_at": "2026-11-28T00:00:00Z",
        "code_version": "iotad test",
        "model": {"cell": "lstm", "units": [4], "layers": 1, "bidirectional": False},
        "window_len": window_len,
        "horizon": 1,
        "features": list(features),
        "scaling": {
            "method": method,
            "per_series": {
                k: {"offset": o, "scale": s} for k, (o, s) in (per_series or {}).items()
            },
            "default": {"offset": 0.0, "scale": 1.0},
        },
        "calibration": {
            "per_series": {k: err(*v) for k, v in (errors or {}).items()},
            "global": err(*global_error),
        },
        "files": {"keras": "model.keras", "tflite": {"1": "model_b1.tflite"}},
    }
    return parse_artifact(doc, Path("/nonexistent"))


class LastValueForecaster:
    """Forecasts the last scaled value of each window (the naive forecast); counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0

    def predict(self, windows: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.rows += windows.shape[0]
        return windows[:, -1, 0].astype(np.float32)


def non_finite_state(core: DetectionCore) -> list[str]:
    """Names of per-series state arrays holding a non-finite value in an active slot (an
    empty range, low +inf / high -inf, is the one sentinel allowed)."""
    used = core.store.used_slots()
    arrays: dict[str, np.ndarray] = {}
    for part in core.parts:
        arrays.update(part.snapshot(used))
    bad = []
    for name, rows in arrays.items():
        if rows.dtype.kind != "f":
            continue
        sentinel = {"low": np.inf, "high": -np.inf, "gap": np.nan}.get(name)
        if sentinel is not None:  # an empty range; a typical interval not learnt yet
            unset = np.isnan(rows) if name == "gap" else rows == sentinel
            rows = np.where(unset, 0.0, rows)
        if not np.isfinite(rows).all():
            bad.append(name)
    for k, relations in enumerate(core.relations.models):  # per device: means and covariances
        for name in ("mean", "cov"):
            if not np.isfinite(getattr(relations, name)).all():
                bad.append(f"relations[{k}].{name}")
    return bad


def run_with_bystander(
    core: DetectionCore, start: int, stop: int, level: dict[str, float], step: float = 60.0
) -> list[AlertEvent]:
    """One reading per step of each series in `level` (device/metric -> level, wiggling a
    little) and of a bystander (m2/temp) that always reports; the clock is the readings'
    time. Returns the events."""
    events: list[AlertEvent] = []
    for k in range(start, stop):
        t = step * k
        batch = [Reading("m2", "temp", t, 30.0 + 0.1 * (k % 3))]
        for key, base in level.items():
            device, metric = key.split("/")
            batch.append(Reading(device, metric, t, base + 0.1 * (k % 3)))
        events += core.process(batch, now=t).events
    return events
