"""Reading and validating a model artifact (the contract between training and the worker).

An artifact is a directory::

    artifact.json     what the model is and how to feed it (see `Artifact`)
    model.keras       the trained Keras model (training and inspection only)
    model.tflite      LiteRT export at batch size `tflite_files` says (the worker runs these)
    model_b1.tflite   ...one file per exported batch size

Writing lives in `training/artifact_writer.py`; this module must stay free of TensorFlow.
Every problem is raised as `ArtifactError` with one line naming it, never a raw traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
ARTIFACT_JSON = "artifact.json"
KNOWN_FEATURES = ("value", "tod_sin", "tod_cos", "dow_sin", "dow_cos")
KNOWN_CELLS = ("lstm", "gru", "simplernn")
KNOWN_SCALING = ("standard", "minmax")


class ArtifactError(Exception):
    """A model artifact is missing, corrupt or of a schema this code does not know."""


@dataclass(frozen=True, slots=True)
class SeriesScale:
    """Affine normalisation of one series: ``scaled = (raw - offset) / scale``."""

    offset: float
    scale: float
    low: float | None = None
    """Smallest raw value in the training data (None in artifacts that do not say)."""
    high: float | None = None
    """Largest raw value in the training data."""
    period: int | None = None
    """Readings per season (e.g. a day) found in the training data, or None."""
    repeat_run: int | None = None
    """The longest run of readings equal to the one before in the training data (None: the
    series never changed value, or the artifact does not say)."""


@dataclass(frozen=True, slots=True)
class ErrorStats:
    """Forecast residual statistics in *scaled* units, from the validation split.

    `abs_quantiles` maps a quantile ("0.5", "0.9", "0.99", "0.999") to that quantile of
    |residual|. The worker seeds its online error statistics from these.
    """

    mean: float
    std: float
    abs_quantiles: dict[str, float]
    n: int
    abs_mean: float | None = None
    """Mean of |residual| (None in artifacts that do not say: a normal law is assumed)."""
    abs_std: float | None = None
    """Standard deviation of |residual|."""


@dataclass(frozen=True, slots=True)
class DeviceModelEntry:
    """artifact.json's description of one device model file."""

    metrics: tuple[str, ...]
    window: int
    file: str


@dataclass(frozen=True, slots=True)
class Artifact:
    """A validated model artifact. Paths are resolved inside `directory`."""

    directory: Path
    schema_version: int
    version: str
    created_at: str
    code_version: str
    cell: str
    units: tuple[int, ...]
    bidirectional: bool
    window_len: int
    horizon: int
    features: tuple[str, ...]
    scaling_method: str
    series_scales: dict[str, SeriesScale]
    default_scale: SeriesScale
    series_errors: dict[str, ErrorStats]
    global_errors: ErrorStats
    tflite_files: dict[int, str]
    keras_file: str
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    alert_z_scale: float = 1.0
    """Calibrated alerting (see `training.alerting`): every likelihood deviation is divided
    by this before it becomes a score, so that the held-out normal history raised at most
    `alert_budget` alerts per series per day. 1.0 in artifacts without calibration."""
    alert_budget: float | None = None
    """Alerts per series per day the calibration allowed on held-out history (None: none)."""
    alert_signal_scales: dict[str, float] = field(default_factory=dict)
    """Per signal (`detector.engine.scoring.SIGNALS` names), the divisor its deviations take before
    the pooled `alert_z_scale`: each signal calibrated to its share of the budget. Signals
    not named: 1."""
    device_models: tuple[DeviceModelEntry, ...] = ()
    """The device models (`detector.engine.device_model`), one per metric signature."""

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.tflite_files))

    def tflite_path(self, batch_size: int) -> Path:
        return _inside(self.directory, self.tflite_files[batch_size])

    @property
    def keras_path(self) -> Path:
        return _inside(self.directory, self.keras_file)

    def scale_for(self, key: str) -> SeriesScale | None:
        """The trained normalisation of series `key` ("device/metric"), or None if unseen."""
        return self.series_scales.get(key)

    def z_scale_for(self, key: str) -> float:
        """The calibrated divisor of series `key`'s likelihood deviations (pooled: one for
        every series)."""
        return self.alert_z_scale

    def device_model_path(self, entry: DeviceModelEntry) -> Path:
        return _inside(self.directory, entry.file)

    def errors_for(self, key: str) -> ErrorStats:
        """Residual statistics of series `key`, falling back to the pooled ones."""
        return self.series_errors.get(key, self.global_errors)


def _inside(directory: Path, name: str) -> Path:
    """Resolve `name` inside `directory`; a name that escapes it is an error."""
    # NUL too: the OS refuses it with a ValueError that would escape as a traceback.
    if not isinstance(name, str) or name in {"", ".", ".."} or any(c in name for c in "/\\\0"):
        raise ArtifactError(f"artifact file name {name!r} must be a plain file name")
    path = (directory / name).resolve()
    if path.parent != directory.resolve():
        raise ArtifactError(f"artifact file {name!r} escapes {directory}")
    return path


def _req(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ArtifactError(f"{where}: missing field {key!r}")
    value = obj[key]
    if kind is float:
        kind = (int, float)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ArtifactError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArtifactError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _scale(obj: Any, where: str) -> SeriesScale:
    if not isinstance(obj, dict):
        raise ArtifactError(f"{where}: expected an object with offset and scale")
    offset = _finite(obj.get("offset"), f"{where}.offset")
    scale = _finite(obj.get("scale"), f"{where}.scale")
    if scale <= 0:
        raise ArtifactError(f"{where}.scale must be positive, got {scale}")
    low = _finite(obj["low"], f"{where}.low") if obj.get("low") is not None else None
    high = _finite(obj["high"], f"{where}.high") if obj.get("high") is not None else None
    period = obj.get("period")
    bad_period = isinstance(period, bool) or not isinstance(period, int) or period < 2
    if period is not None and bad_period:
        raise ArtifactError(f"{where}.period must be an integer of at least 2, or null")
    run = obj.get("repeat_run")
    if run is not None and (isinstance(run, bool) or not isinstance(run, int) or run < 0):
        raise ArtifactError(f"{where}.repeat_run must be a non-negative integer, or null")
    return SeriesScale(offset, scale, low, high, period, run)


def _errors(obj: Any, where: str) -> ErrorStats:
    if not isinstance(obj, dict):
        raise ArtifactError(f"{where}: expected an object of residual statistics")
    std = _finite(obj.get("std"), f"{where}.std")
    if std < 0:
        raise ArtifactError(f"{where}.std must not be negative")
    quantiles = obj.get("abs_quantiles", {})
    if not isinstance(quantiles, dict):
        raise ArtifactError(f"{where}.abs_quantiles must be an object")
    n = obj.get("n", 0)
    if not isinstance(n, int) or n < 0:
        raise ArtifactError(f"{where}.n must be a non-negative integer")
    return ErrorStats(
        mean=_finite(obj.get("mean", 0.0), f"{where}.mean"),
        std=std,
        abs_quantiles={
            str(k): _finite(v, f"{where}.abs_quantiles[{k}]") for k, v in quantiles.items()
        },
        n=n,
        abs_mean=_optional_finite(obj, "abs_mean", where),
        abs_std=_optional_finite(obj, "abs_std", where),
    )


def _optional_finite(obj: dict[str, Any], key: str, where: str) -> float | None:
    return _finite(obj[key], f"{where}.{key}") if obj.get(key) is not None else None


def _alerting(obj: Any) -> dict[str, Any]:
    """The optional ``alerting`` section: {"budget": b, "z_scale": s}, s >= 1 and finite."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ArtifactError("alerting must be a JSON object")
    scale = _finite(_req(obj, "z_scale", (int, float), "alerting"), "alerting.z_scale")
    if scale < 1.0 or scale > 1e6:
        raise ArtifactError(f"alerting.z_scale {scale} is outside [1, 1e6]")
    budget = obj.get("budget")
    if budget is not None:
        budget = _finite(budget, "alerting.budget")
        if budget < 0:
            raise ArtifactError("alerting.budget must not be negative")
    per_signal = obj.get("z_scales", {})
    if not isinstance(per_signal, dict):
        raise ArtifactError("alerting.z_scales must be a JSON object of signal: divisor")
    scales: dict[str, float] = {}
    for name, value in per_signal.items():
        where = f"alerting.z_scales[{name}]"
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ArtifactError(f"{where} must be a number")
        v = _finite(value, where)
        if v < 1.0 or v > MAX_SIGNAL_DIVISOR:
            raise ArtifactError(f"{where} {v} is outside [1, {MAX_SIGNAL_DIVISOR:g}]")
        scales[str(name)] = v
    return {"alert_z_scale": scale, "alert_budget": budget, "alert_signal_scales": scales}


MAX_SIGNAL_DIVISOR = 1e6
"""The largest divisor `alerting.z_scales` may give a signal."""
MAX_DEVICE_METRICS = 8
"""Metrics in one device model's signature (its judged variants grow with the square)."""


def _device_models(obj: Any, directory: Path, window_len: int) -> tuple[DeviceModelEntry, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, list):
        raise ArtifactError("device_models must be a list")
    out = []
    for i, entry in enumerate(obj):
        where = f"device_models[{i}]"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where} must be an object")
        metrics = _req(entry, "metrics", list, where)
        if (
            not 2 <= len(metrics) <= MAX_DEVICE_METRICS
            or not all(isinstance(m, str) and m for m in metrics)
            or metrics != sorted(set(metrics))
        ):
            raise ArtifactError(
                f"{where}.metrics must be 2 to {MAX_DEVICE_METRICS} distinct names, sorted"
            )
        window = _req(entry, "window", int, where)
        if not 1 <= window <= window_len:
            raise ArtifactError(f"{where}.window must be between 1 and window_len ({window_len})")
        file = _req(entry, "file", str, where)
        _inside(directory, file)
        out.append(DeviceModelEntry(tuple(metrics), window, file))
    if len({e.metrics for e in out}) != len(out):
        raise ArtifactError("device_models: two models for one metric signature")
    return tuple(out)


def parse_artifact(doc: Any, directory: Path) -> Artifact:
    """Validate a decoded ``artifact.json`` document; raise `ArtifactError` on any problem."""
    where = ARTIFACT_JSON
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: expected a JSON object at the top level")
    schema = _req(doc, "schema_version", int, where)
    if schema != SCHEMA_VERSION:
        raise ArtifactError(
            f"{where}: unknown schema_version {schema} (this iotad reads {SCHEMA_VERSION}); "
            "retrain the model or upgrade iotad"
        )
    model = _req(doc, "model", dict, where)
    cell = _req(model, "cell", str, "model")
    if cell not in KNOWN_CELLS:
        raise ArtifactError(f"model.cell {cell!r} is not one of {', '.join(KNOWN_CELLS)}")
    units = _req(model, "units", list, "model")
    if not units or not all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units
    ):
        raise ArtifactError("model.units must be a non-empty list of positive integers")
    window_len = _req(doc, "window_len", int, where)
    if window_len < 1:
        raise ArtifactError(f"{where}: window_len must be at least 1")
    horizon = _req(doc, "horizon", int, where)
    if horizon != 1:
        raise ArtifactError(f"{where}: horizon {horizon} is not supported (only 1-step forecasts)")
    features = _req(doc, "features", list, where)
    if not features or features[0] != "value" or any(f not in KNOWN_FEATURES for f in features):
        raise ArtifactError(
            f"{where}: features {features!r} must start with 'value' and use only "
            f"{', '.join(KNOWN_FEATURES)}"
        )
    scaling = _req(doc, "scaling", dict, where)
    method = _req(scaling, "method", str, "scaling")
    if method not in KNOWN_SCALING:
        raise ArtifactError(f"scaling.method {method!r} is not one of {', '.join(KNOWN_SCALING)}")
    per_series = _req(scaling, "per_series", dict, "scaling")
    calibration = _req(doc, "calibration", dict, where)
    files = _req(doc, "files", dict, where)
    tflite = _req(files, "tflite", dict, "files")
    if not tflite:
        raise ArtifactError("files.tflite lists no LiteRT model")
    tflite_files: dict[int, str] = {}
    for batch, name in tflite.items():
        if not str(batch).isdigit() or int(batch) < 1:
            raise ArtifactError(f"files.tflite: batch size {batch!r} is not a positive integer")
        _inside(directory, name)
        tflite_files[int(batch)] = name
    keras_file = _req(files, "keras", str, "files")
    _inside(directory, keras_file)
    return Artifact(
        directory=directory,
        schema_version=schema,
        version=_req(doc, "version", str, where),
        created_at=_req(doc, "created_at", str, where),
        code_version=_req(doc, "code_version", str, where),
        cell=cell,
        units=tuple(units),
        bidirectional=bool(model.get("bidirectional", False)),
        window_len=window_len,
        horizon=horizon,
        features=tuple(features),
        scaling_method=method,
        series_scales={
            str(k): _scale(v, f"scaling.per_series[{k}]") for k, v in per_series.items()
        },
        default_scale=_scale(
            scaling.get("default", {"offset": 0.0, "scale": 1.0}), "scaling.default"
        ),
        series_errors={
            str(k): _errors(v, f"calibration.per_series[{k}]")
            for k, v in _req(calibration, "per_series", dict, "calibration").items()
        },
        global_errors=_errors(
            _req(calibration, "global", dict, "calibration"), "calibration.global"
        ),
        tflite_files=tflite_files,
        keras_file=keras_file,
        training=doc.get("training", {}) if isinstance(doc.get("training"), dict) else {},
        **_alerting(doc.get("alerting")),
        device_models=_device_models(doc.get("device_models"), directory, window_len),
        metrics=doc.get("metrics", {}) if isinstance(doc.get("metrics"), dict) else {},
    )


def load_artifact(path: str | Path, *, check_files: bool = True) -> Artifact:
    """Load and validate the artifact directory at `path`.

    Raises `ArtifactError` with a one-line message when the directory, ``artifact.json`` or a
    model file it names is missing, unreadable, corrupt or of an unknown schema.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ArtifactError(
            f"model artifact {directory} is not a directory (train one: iotad train)"
        )
    meta = directory / ARTIFACT_JSON
    try:
        text = meta.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{meta} is missing: not a model artifact") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta} cannot be read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{meta} is corrupt (invalid JSON at line {exc.lineno}: {exc.msg})"
        ) from None
    artifact = parse_artifact(doc, directory)
    if check_files:
        for batch in artifact.batch_sizes:
            model_file = artifact.tflite_path(batch)
            if not model_file.is_file():
                raise ArtifactError(f"{model_file} is missing (named in {ARTIFACT_JSON})")
        for entry in artifact.device_models:
            model_file = artifact.device_model_path(entry)
            if not model_file.is_file():
                raise ArtifactError(f"{model_file} is missing (named in {ARTIFACT_JSON})")
    return artifact
