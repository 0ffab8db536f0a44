"""The training pipeline: readings in, a checked model artifact out.

    load/clean -> scale per series + window -> fit -> calibrate -> export + check -> write

`train(cfg)` reads CSV files; `train_series(series, cfg, out)` takes in-memory arrays (the
NAB evaluation uses it). Both run the same steps. TensorFlow is imported only once the data
has been read and checked, so input errors are reported in well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detector.engine.artifact import ARTIFACT_JSON, KNOWN_SCALING, Artifact
from detector.engine.features import TIME_FEATURES
from training import (
    alerting,
    artifact_writer,
    continuation,
    device_training,
    export,
    fitting,
    report,
    windowing,
)
from training.calibration import calibrate, error_stats
from training.data import DataError, LoadedData, Series, from_arrays, load_files
from training.models import CELLS, ModelSpec, build_model, resolve_units
from training.report import summary_lines

__all__ = ["TrainConfig", "TrainResult", "summary_lines", "train", "train_series"]

SHORT_SERIES = "short_series"
"""Drop reason of readings in series too short for one training window."""


@dataclass
class TrainConfig:
    """Options of one training run (the ``iotad train`` flags)."""

    data: list[Path] = field(default_factory=list)
    out: Path | None = None
    """Artifact directory; None means ``models/<version>``."""
    cell: str = "lstm"
    units: tuple[int, ...] = (32,)
    """Units per recurrent layer; one number is repeated for each of `layers`."""
    layers: int = 1
    bidirectional: bool = False
    residual: bool = True
    """Forecast the change from the last value (the model starts near the naive forecast)."""
    window: int = 32
    scaling: str = "standard"
    split: float = 0.8
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 5
    seed: int = 0
    time_features: bool = False
    quiet: bool = False
    device: str | None = None
    max_windows: int | None = 8192
    """Training windows per epoch: a fresh seeded sample each epoch (None: all of them).
    The default keeps an epoch near a second on two cores, so 100,000 readings train in
    well under a minute; smaller data sets are unaffected."""
    max_val_windows: int | None = 8192
    """Validation windows early stopping watches (a fixed seeded sample; None: all).
    Calibration and metrics always use every validation window."""
    batch_sizes: tuple[int, ...] = (1, 8, 64)
    """LiteRT batch sizes to export (64 is ``model.tflite``). The worker runs each drain as
    full batches of the largest plus one padded batch of the smallest size that fits the
    rest, so 8 keeps a drain of a few readings from paying for a padded 64."""
    plots: bool = True
    deterministic: bool = True
    """Make TensorFlow's ops deterministic, so a rerun gives the same weights."""
    tflite_tolerance: float = export.TFLITE_TOLERANCE
    alert_budget: float = alerting.DEFAULT_BUDGET
    """Alerts per series per day the held-out history may raise; the artifact's alert
    calibration is chosen for it (see `training.alerting`). 0: no calibration."""
    device_models: bool = True
    """Train a device model per metric signature (`training.device_training`)."""
    device_rows: int = device_training.DeviceTrainConfig.max_rows
    """Training rows drawn per device-model signature (each epoch sees them all): about a
    minute on two cores at the default; a small plant or a demo trains well on fewer."""
    parent: Path | None = None
    """An artifact to continue from (``--from``): its shape, weights and, where the new data
    fits, its normalisation (see `training.continuation`). None: a new model."""
    fit_margin: float = continuation.FIT_MARGIN
    """How far new data may leave a parent series' range (fraction of its span) and keep
    the parent's normalisation."""

    def layer_units(self) -> tuple[int, ...]:
        """Units of each recurrent layer."""
        return resolve_units(self.units, self.layers)

    def features(self) -> tuple[str, ...]:
        """The model's input features (the artifact's ``features``)."""
        return ("value", *TIME_FEATURES) if self.time_features else ("value",)

    def validate(self) -> None:
        """Raise ValueError naming the first option that is out of range."""
        if self.cell not in CELLS:
            raise ValueError(f"cell {self.cell!r} is not one of {', '.join(CELLS)}")
        if self.scaling not in KNOWN_SCALING:
            raise ValueError(f"scaling {self.scaling!r} is not one of {', '.join(KNOWN_SCALING)}")
        self.layer_units()
        checks = [
            (self.window >= 1, "window must be at least 1"),
            (0.0 < self.split < 1.0, "split must be between 0 and 1 (exclusive)"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.lr > 0, "learning rate must be positive"),
            (self.patience >= 0, "patience must not be negative"),
            (self.max_windows is None or self.max_windows >= 1, "max windows must be >= 1"),
            (
                self.max_val_windows is None or self.max_val_windows >= 1,
                "max validation windows must be >= 1",
            ),
            (bool(self.batch_sizes) and min(self.batch_sizes) >= 1, "bad export batch sizes"),
            (0.0 <= self.alert_budget <= 1000.0, "alert budget must be between 0 and 1000"),
            (0.0 <= self.fit_margin <= 100.0, "fit margin must be between 0 and 100"),
            (1 <= self.device_rows <= 100_000_000, "device rows must be between 1 and 1e8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def options(self) -> dict[str, Any]:
        """The options as JSON (for the report and the version hash), paths aside."""
        doc = asdict(self)
        for key in ("data", "out", "quiet", "parent"):
            doc.pop(key)
        doc["units"] = list(self.layer_units())
        doc["layers"] = len(doc["units"])
        doc["batch_sizes"] = sorted(set(self.batch_sizes))
        return doc


@dataclass
class TrainResult:
    """What a run produced: where the artifact is, and the full report."""

    artifact_dir: Path
    report: dict[str, Any]
    artifact: Artifact | None = None


@dataclass
class _Plan:
    """Everything decided before TensorFlow is imported."""

    cfg: TrainConfig
    loaded: LoadedData
    ws: windowing.WindowSet
    spec: ModelSpec
    stop_pos: np.ndarray
    """Validation windows that early stopping watches (all, or a sample of many)."""
    target: Path
    version: str
    created: datetime
    dropped: dict[str, int]
    started: float
    timing: dict[str, float] = field(default_factory=dict)
    parent: continuation.Parent | None = None
    normalisation: dict[str, list[str]] = field(default_factory=dict)
    """Which normalisation rule each series took (continued models only)."""

    def log(self, message: str) -> None:
        if not self.cfg.quiet:
            print(f"iotad train: {message}", file=sys.stderr, flush=True)


def train(cfg: TrainConfig) -> TrainResult:
    """Train on the CSV and Parquet inputs of `cfg.data` and write the artifact to `cfg.out`.

    Raises `DataError` (input unusable), `ArtifactWriteError` (output unusable), ValueError
    (bad option) or `ExportMismatchError` (LiteRT does not forecast what Keras does).
    """
    cfg.validate()
    started = time.perf_counter()
    return _execute(_plan(load_files(cfg.data, cfg.device), cfg, cfg.out, started))


def train_series(series: Series, cfg: TrainConfig, out: Path | None = None) -> TrainResult:
    """Train on in-memory series ``{"device/metric": (ts, values)}``; `out` overrides cfg.out.

    The same pipeline as `train` without CSV: values are cleaned (non-finite and duplicate
    timestamps dropped and counted), scaled, windowed, fitted, exported and checked.
    """
    cfg.validate()
    started = time.perf_counter()
    return _execute(_plan(from_arrays(series), cfg, out if out is not None else cfg.out, started))


def _version(created: datetime, fingerprint: str, options: dict[str, Any]) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(json.dumps(options, sort_keys=True).encode())
    return f"{created:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}"


def _plan(loaded: LoadedData, cfg: TrainConfig, out: Path | None, started: float) -> _Plan:
    parent = None
    fixed: dict[str, tuple[float, float]] | None = None
    rules: dict[str, list[str]] = {}
    if cfg.parent is not None:
        parent = continuation.load_parent(cfg.parent)
        cfg = continuation.adopt_shape(cfg, parent)
        fixed, rules = continuation.kept_scales(parent, loaded.series, cfg.fit_margin)
    features = cfg.features()
    ws = windowing.build_windows(
        loaded.series, cfg.window, cfg.split, cfg.scaling, features, fixed_scales=fixed
    )
    if ws.train_pos.size == 0:
        need = windowing.min_readings(cfg.window, cfg.split)
        longest = max((v.size for _, v in loaded.series.values()), default=0)
        lost = sum(loaded.dropped.values())
        raise DataError(
            f"no usable series: with window {cfg.window} and split {cfg.split} a series "
            f"needs at least {need} readings; the longest has {longest}"
            + (f" ({lost} of {loaded.rows_total} rows were dropped as unusable)" if lost else "")
        )
    if ws.val_pos.size == 0:
        raise DataError(f"no validation windows: give more readings or a split below {cfg.split}")
    dropped = dict(loaded.dropped)
    if ws.skipped:
        dropped[SHORT_SERIES] = sum(ws.skipped.values())
    created = datetime.now(UTC).replace(microsecond=0)
    options = cfg.options()
    if parent is not None:
        options["continued_from"] = parent.version
    version = _version(created, loaded.fingerprint, options)
    target = Path(out) if out is not None else Path("models") / version
    artifact_writer.check_target(target)  # fail now, not after minutes of training
    return _Plan(
        cfg=cfg,
        loaded=loaded,
        ws=ws,
        spec=ModelSpec(
            cfg.window,
            len(features),
            cfg.cell,
            cfg.layer_units(),
            cfg.bidirectional,
            cfg.residual,
        ),
        stop_pos=windowing.subsample(ws.val_pos, cfg.max_val_windows, cfg.seed),
        target=target,
        version=version,
        created=created,
        dropped=dropped,
        started=started,
        timing={"load_s": time.perf_counter() - started},
        parent=parent,
        normalisation=rules,
    )


def _execute(plan: _Plan) -> TrainResult:
    ws = plan.ws
    plan.log(
        f"{ws.values.size} readings in {len(ws.keys)} series; {ws.train_pos.size} training "
        f"and {ws.val_pos.size} validation windows of {plan.cfg.window}; importing TensorFlow"
    )
    t = time.perf_counter()
    fitting.import_tensorflow()
    plan.timing["import_s"] = time.perf_counter() - t
    # Quiet means quiet: TensorFlow's native notices during fitting and export are held back
    # too (and shown should anything fail).
    hold = fitting.native_stderr_captured() if plan.cfg.quiet else contextlib.nullcontext()
    with hold:
        return _fit_and_write(plan)


def _timed(plan: _Plan, name: str, since: float) -> float:
    now = time.perf_counter()
    plan.timing[name] = now - since
    return now


def _fit_and_write(plan: _Plan) -> TrainResult:
    import keras

    cfg, ws, spec = plan.cfg, plan.ws, plan.spec
    fitting.set_seed(cfg.seed, cfg.deterministic)
    if plan.parent is not None:
        plan.log(f"continuing from {plan.parent.version} (its weights, loaded in safe mode)")
        model = continuation.load_keras(plan.parent)
    else:
        model = build_model(spec)
    t = time.perf_counter()
    with fitting.native_stderr_captured():  # TensorFlow's notices; Keras' progress is stdout
        history = fitting.fit_model(
            model,
            lambda pos: (ws.inputs(pos), ws.targets(pos)),
            ws.train_pos,
            (ws.inputs(plan.stop_pos), ws.targets(plan.stop_pos)),
            fitting.FitPlan(
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                patience=cfg.patience,
                windows_per_epoch=cfg.max_windows,
                seed=cfg.seed,
                verbose=not cfg.quiet,
            ),
        )
    t = _timed(plan, "fit_s", t)
    x_val, y_val = ws.inputs(ws.val_pos), ws.targets(ws.val_pos)

    with artifact_writer.staging_dir(plan.target) as tmp:
        model.save(tmp / artifact_writer.KERAS_FILE)
        # From here on, the model as saved and read back in safe mode: exactly what someone
        # retraining or inspecting the artifact gets.
        saved = keras.models.load_model(tmp / artifact_writer.KERAS_FILE, safe_mode=True)
        predicted = fitting.predict(saved, x_val)
        plan.log(f"exporting LiteRT at batch sizes {', '.join(map(str, sorted(cfg.batch_sizes)))}")
        with fitting.native_stderr_captured():
            names = export.export_tflite(saved, spec, cfg.batch_sizes, tmp)
            diffs = export.compare_exports(tmp, names, x_val, predicted)
        worst = export.check_agreement(diffs, cfg.tflite_tolerance)
        t = _timed(plan, "export_s", t)

        residual = y_val - predicted
        naive_error = y_val - ws.last_values(ws.val_pos)
        seasonal_error = y_val - report.seasonal_naive(ws, ws.val_pos)
        per_series_errors, global_errors = calibrate(residual, ws.series_id[ws.val_pos], ws.keys)
        devices = _device_models(plan, tmp)
        t = _timed(plan, "device_models_s", t)
        for key, deviations in devices.deviations.items():
            # The core's error statistics of a judged series follow the device model's z.
            per_series_errors[key] = error_stats(deviations)
        scales, ranges, periods = dict(ws.scales), dict(ws.ranges), dict(ws.periods)
        repeat_runs = dict(ws.repeat_runs)
        if plan.parent is not None:
            continuation.merge_parent_series(
                plan.parent,
                plan.normalisation,
                scales,
                ranges,
                periods,
                per_series_errors,
                repeat_runs,
            )
        doc = artifact_writer.artifact_doc(
            version=plan.version,
            created_at=plan.created.isoformat().replace("+00:00", "Z"),
            spec=spec,
            features=ws.features,
            scaling_method=cfg.scaling,
            scales=scales,
            ranges=ranges,
            periods=periods,
            repeat_runs=repeat_runs,
            calibration_per_series=per_series_errors,
            calibration_global=global_errors,
            tflite_files=names,
            training=_training_section(plan, len(history["loss"])),
            metrics=report.metrics(residual, naive_error, global_errors, worst, seasonal_error),
        )
        if devices.entries:
            doc["device_models"] = devices.entries
        if cfg.alert_budget > 0:
            plan.log(f"calibrating alerts on the held-out history (budget {cfg.alert_budget:g})")
            doc["alerting"] = _calibrate_alerts(plan, doc, tmp)
            t = _timed(plan, "calibration_s", t)
        artifact_writer.write_json(tmp / ARTIFACT_JSON, doc)
        artifact_writer.self_check(tmp)
        if cfg.plots:
            from training import plots

            plots.plot_forecasts(tmp / "forecast.png", report.forecast_panels(ws, predicted))
            plots.plot_loss(tmp / "loss.png", history["loss"], history["val_loss"])
            _timed(plan, "plots_s", t)
        plan.timing["total_s"] = time.perf_counter() - plan.started
        full = {
            **doc,
            "artifact_dir": str(plan.target),
            "history": history,
            "timing_s": {k: round(v, 3) for k, v in plan.timing.items()},
            "tflite_max_diff_per_batch": {str(b): d for b, d in sorted(diffs.items())},
            "per_series": report.per_series(ws, residual, naive_error, seasonal_error),
            "device_models": devices.reports,
        }
        artifact_writer.write_json(tmp / "report.json", full)
        artifact_writer.publish(tmp, plan.target)
    return TrainResult(plan.target, full, artifact_writer.self_check(plan.target))


@dataclass
class _Devices:
    entries: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    deviations: dict[str, np.ndarray] = field(default_factory=dict)


def _device_models(plan: _Plan, directory: Path) -> _Devices:
    """Train the device models into `directory` (none when switched off)."""
    cfg = plan.cfg
    if not cfg.device_models:
        return _Devices()
    dcfg = device_training.DeviceTrainConfig(
        window=min(cfg.window, 16), seed=cfg.seed, max_rows=cfg.device_rows
    )
    entries, reports, deviations = device_training.train_device_models(
        plan.loaded.series, plan.ws.scales, plan.ws.n_train_readings, dcfg, directory, plan.log
    )
    return _Devices(entries, reports, deviations)


def _calibrate_alerts(plan: _Plan, doc: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Replay the held-out history through the worker's core with the exported model and
    choose the alerting divisor for the budget (`training.alerting`)."""
    from detector.engine.artifact import parse_artifact
    from detector.engine.forecaster import LiteRTForecaster

    artifact = parse_artifact(doc, directory)
    calibration = alerting.calibrate_artifact(
        artifact,
        LiteRTForecaster.from_artifact(artifact),
        plan.loaded.series,
        plan.ws.n_train_readings,
        plan.cfg.alert_budget,
    )
    plan.log(
        f"held-out history: {calibration.alerts_at_default} alerts uncalibrated, "
        f"{calibration.alerts} with divisors "
        + ", ".join(
            f"{k} {v:.3g}" for k, v in (calibration.signal_scales or {}).items() if v != 1.0
        )
        + " "
        f"({calibration.alerts_per_series_day:.3f} per series-day)"
    )
    return calibration.to_dict(plan.cfg.alert_budget)


def _training_section(plan: _Plan, epochs_run: int) -> dict[str, Any]:
    ws, loaded = plan.ws, plan.loaded
    return {
        "data_fingerprint": loaded.fingerprint,
        "files": loaded.files,
        "rows_total": loaded.rows_total,
        "rows_dropped": {
            "total": sum(plan.dropped.values()),
            "reasons": dict(sorted(plan.dropped.items())),
        },
        "rows_used": int(ws.values.size),
        "series": len(ws.keys),
        "series_skipped": ws.skipped,
        "train_windows": int(ws.train_pos.size),
        "windows_per_epoch": min(int(ws.train_pos.size), plan.cfg.max_windows or ws.train_pos.size),
        "val_windows": int(ws.val_pos.size),
        "early_stopping_val_windows": int(plan.stop_pos.size),
        "split": plan.cfg.split,
        "seed": plan.cfg.seed,
        "epochs_run": epochs_run,
        "options": plan.cfg.options(),
        **(
            {
                "continued_from": continuation.report_section(
                    plan.parent, plan.normalisation, plan.cfg.fit_margin
                )
            }
            if plan.parent is not None
            else {}
        ),
    }
