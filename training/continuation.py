"""``iotad train --from ARTIFACT``: fine-tune an existing model on new history.

The continued model keeps the parent's shape (cell, units, window, features, scaling) and
starts from its weights (the ``.keras`` file, loaded in safe mode). Each series of the new
data is normalised as follows, and the report lists which rule each took:

* **kept** — the parent knew it and the new data *fits*: every new value lies within the
  parent's recorded training range widened by `margin` of its span on each side. The
  parent's offset and scale stay, so the inputs the network was trained on mean what they
  meant, and a running worker carries the series' statistics over unchanged.
* **refit** — the parent knew it, but the new data leaves that range (a retrofit, a new
  sensor, a recalibration) or the parent recorded none: normalisation is fitted on the new
  training part, as for any series.
* **added** — the parent did not know it: fitted as for any series.

Series of the parent that are not in the new data stay in the artifact with the parent's
normalisation, range, period and per-series calibration, so the lines the model served
before keep being served.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.engine.artifact import (
    ARTIFACT_JSON,
    Artifact,
    ArtifactError,
    SeriesScale,
    load_artifact,
)
from detector.worker.model_reload import check_keras_safe
from training.models import ModelSpec

if TYPE_CHECKING:
    from training.data import Series
    from training.pipeline import TrainConfig

FIT_MARGIN = 0.25
"""Fraction of the parent's training span by which new data may leave its range on either
side and still keep the parent's normalisation."""
SHAPE_FIELDS = ("cell", "units", "layers", "bidirectional", "residual", "window")
"""Options a continued model takes from its parent (with `time_features` and `scaling`)."""


@dataclass(frozen=True)
class Parent:
    """The artifact training continues from."""

    artifact: Artifact
    doc: dict[str, Any]
    """Its ``artifact.json`` as written (per-series calibration kept for absent series)."""
    spec: ModelSpec

    @property
    def version(self) -> str:
        return self.artifact.version


def load_parent(path: Path) -> Parent:
    """Load the artifact at `path` to continue from; raises `ArtifactError` in one line."""
    artifact = load_artifact(path)
    if not artifact.keras_path.is_file():
        raise ArtifactError(f"{artifact.keras_path} is missing: nothing to continue from")
    check_keras_safe(artifact)  # before TensorFlow is imported and the fitting starts
    doc = json.loads((artifact.directory / ARTIFACT_JSON).read_text(encoding="utf-8"))
    model = doc.get("model", {})
    spec = ModelSpec(
        artifact.window_len,
        artifact.n_features,
        artifact.cell,
        artifact.units,
        artifact.bidirectional,
        bool(model.get("residual", True)) if isinstance(model, dict) else True,
    )
    return Parent(artifact, doc, spec)


def load_keras(parent: Parent) -> Any:
    """The parent's Keras model, loaded in safe mode; `ArtifactError` when it cannot be."""
    import keras

    try:
        return keras.models.load_model(parent.artifact.keras_path, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, TypeError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ArtifactError(
            f"{parent.artifact.keras_path} does not load in safe mode: {first}"
        ) from None


def adopt_shape(cfg: TrainConfig, parent: Parent) -> TrainConfig:
    """`cfg` with the parent's shape; `DataError` when an option asks for another one.

    An option still at its default is taken from the parent; one set to something else
    than the parent has is refused (a continued model cannot change its shape).
    """
    from training.data import DataError
    from training.pipeline import TrainConfig

    defaults = TrainConfig()
    art, spec = parent.artifact, parent.spec
    wanted: dict[str, Any] = {
        "cell": spec.cell,
        "units": spec.units,
        "layers": len(spec.units),
        "bidirectional": spec.bidirectional,
        "residual": spec.residual,
        "window": spec.window_len,
        "time_features": len(art.features) > 1,
        "scaling": art.scaling_method,
    }
    for name, value in wanted.items():
        given = getattr(cfg, name)
        default = getattr(defaults, name)
        if name == "units":
            given, default = cfg.layer_units(), defaults.layer_units()
        if given != default and given != value:
            raise DataError(
                f"{name} {given!r} differs from the model being continued "
                f"({art.version}: {value!r}); a continued model keeps its shape"
            )
    return dataclasses.replace(cfg, **wanted)


def fits(scale: SeriesScale, values: np.ndarray, margin: float = FIT_MARGIN) -> bool:
    """Whether `values` lie within the parent's training range widened by `margin` of its
    span on each side (False when the parent recorded no range)."""
    if scale.low is None or scale.high is None or values.size == 0:
        return False
    span = max(scale.high - scale.low, 0.0)
    return bool(
        values.min() >= scale.low - margin * span and values.max() <= scale.high + margin * span
    )


def kept_scales(
    parent: Parent, series: Series, margin: float = FIT_MARGIN
) -> tuple[dict[str, tuple[float, float]], dict[str, list[str]]]:
    """The parent normalisations the new data keeps, and which rule each series took
    (``kept``, ``refit``, ``added``, and ``parent_only`` for those not in the new data)."""
    fixed: dict[str, tuple[float, float]] = {}
    rules: dict[str, list[str]] = {"kept": [], "refit": [], "added": [], "parent_only": []}
    for key in sorted(series):
        scale = parent.artifact.scale_for(key)
        if scale is None:
            rules["added"].append(key)
        elif fits(scale, np.asarray(series[key][1], dtype=np.float64), margin):
            fixed[key] = (scale.offset, scale.scale)
            rules["kept"].append(key)
        else:
            rules["refit"].append(key)
    rules["parent_only"] = sorted(set(parent.artifact.series_scales) - set(series))
    return fixed, rules


def merge_parent_series(
    parent: Parent,
    rules: dict[str, list[str]],
    scales: dict[str, tuple[float, float]],
    ranges: dict[str, tuple[float, float]],
    periods: dict[str, int | None],
    calibration: dict[str, dict[str, object]],
    repeat_runs: dict[str, int | None],
) -> None:
    """Complete the new artifact's per-series sections with what the parent knew (in place):
    kept series' ranges and longest repeat runs joined with the parent's, series absent
    from the new data whole."""
    art = parent.artifact
    for key in rules["kept"]:
        old = art.series_scales[key]
        if old.low is not None and old.high is not None and key in ranges:
            low, high = ranges[key]
            ranges[key] = (min(low, old.low), max(high, old.high))
        if old.repeat_run is not None:
            new_run = repeat_runs.get(key)
            repeat_runs[key] = old.repeat_run if new_run is None else max(new_run, old.repeat_run)
    old_calibration = parent.doc.get("calibration", {}).get("per_series", {})
    for key in rules["parent_only"]:
        old = art.series_scales[key]
        scales[key] = (old.offset, old.scale)
        if old.low is not None and old.high is not None:
            ranges[key] = (old.low, old.high)
        else:  # the artifact writer needs one: the scale's own span stands in
            ranges[key] = (old.offset - old.scale, old.offset + old.scale)
        periods[key] = old.period
        repeat_runs[key] = old.repeat_run
        if key in old_calibration:
            calibration[key] = old_calibration[key]


def report_section(parent: Parent, rules: dict[str, list[str]], margin: float) -> dict[str, Any]:
    """The ``training.continued_from`` section of the artifact and report."""
    return {
        "version": parent.version,
        "path": str(parent.artifact.directory),
        "fit_margin": margin,
        "normalisation": rules,
    }


def summary_line(section: dict[str, Any]) -> str:
    rules = section["normalisation"]
    refit = rules["refit"]
    return (
        f"continued from {section['version']}: normalisation kept for {len(rules['kept'])} "
        f"series, refit for {len(refit)}"
        + (
            f" ({', '.join(refit[:5])}{', ...' if len(refit) > 5 else ''}: new data outside "
            "the stored range)"
            if refit
            else ""
        )
        + f", added for {len(rules['added'])}; {len(rules['parent_only'])} series kept from "
        "the parent without new data"
    )
