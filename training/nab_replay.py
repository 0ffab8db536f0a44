"""Replaying one NAB file through the worker's detection core, strictly causally.

Per file: the probationary rows are history. A forecaster is fitted on them alone (the LSTM
training pipeline, or the naive last-value baseline), then every later row goes through
`detector.engine.core.DetectionCore.process` in time order, as the worker would receive it. A row's
score depends only on the rows before and at it: nothing looks at the file's later values,
its overall min/max or its length (the caller passes the history length).

The core's per-reading output becomes NAB's ``anomaly_score`` in exactly one place,
`nab_anomaly_score`; its fixed default threshold is `DEFAULT_NAB_THRESHOLD`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.engine.artifact import SCHEMA_VERSION, Artifact, load_artifact, parse_artifact
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.features import fit_scale
from detector.engine.forecaster import Forecaster
from detector.engine.readings import Reading
from detector.engine.seasonality import estimate_period
from training.windowing import PERIOD_SAMPLE

# What became of each row (the `status` column of the detail CSV).
PROBATION, WARMING, DROPPED, SCORED = 0, 1, 2, 3

DEFAULT_NAB_THRESHOLD = 0.5
"""NAB threshold that equals the core's default `DetectionConfig.threshold`."""

ONSET_DAMPING = 0.5
"""Anomalous readings inside an open episode report this fraction of the threshold."""

MODELS = ("lstm", "naive")


def nab_anomaly_score(
    core_score: np.ndarray, is_anomaly: np.ndarray, onset: np.ndarray, core_threshold: float
) -> np.ndarray:
    """Map the core's per-reading output to NAB's ``anomaly_score`` in [0, 1].

    The core's score is already in [0, 1]. What an operator gets from the worker is one alert
    per episode, at its onset; NAB charges every detection row, so an anomalous reading
    inside an episode that already fired reports ``ONSET_DAMPING * threshold`` instead of its
    score. Rows the core did not score (NaN: probation, warm-up, dropped) get 0.
    """
    s = np.asarray(core_score, dtype=np.float64)
    out = np.where(np.isfinite(s), s, 0.0)
    inside = np.asarray(is_anomaly, dtype=bool) & ~np.asarray(onset, dtype=bool)
    out[inside] = np.minimum(out[inside], ONSET_DAMPING * core_threshold)
    return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """How to replay NAB files: model, training overrides, core settings, batching."""

    model: str = "lstm"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of `training.pipeline.TrainConfig` to set (``--train KEY=VALUE``)."""
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    chunk_rows: int = 256
    """Readings per `process` call; chunks start at fixed rows so a prefix replays the same."""
    prime_rows: int | None = None
    """History rows fed through the core before scoring starts; None = all of them, so the
    core's long-run statistics have learnt the history as the worker's would have."""
    reuse_models: bool = False
    """Load an artifact an earlier run left in the work folder instead of training, when it
    was trained on the same history with the same options (``--reuse-models``)."""


@dataclass(slots=True)
class FileReplay:
    """Everything the replay of one file produced, row-aligned with the file."""

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    history_rows: int
    core_score: np.ndarray  # NaN where the core gave no score
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    is_anomaly: np.ndarray
    onset: np.ndarray
    status: np.ndarray
    anomaly_score: np.ndarray
    fit_s: float = 0.0
    replay_s: float = 0.0
    model_info: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Rows per fate: probation, warming, dropped, scored; and core anomalies."""
        return {
            "rows": int(self.status.size),
            "probation_rows": int(np.sum(self.status == PROBATION)),
            "warming_rows": int(np.sum(self.status == WARMING)),
            "dropped_rows": int(np.sum(self.status == DROPPED)),
            "scored_rows": int(np.sum(self.status == SCORED)),
            "core_anomalies": int(np.sum(self.is_anomaly)),
        }


def series_names(name: str) -> tuple[str, str]:
    """The ``(device, metric)`` a NAB file plays as: its file stem and ``value``."""
    stem = Path(name).stem
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem)[:64], "value"


class LastValueForecaster:
    """The naive forecast: tomorrow looks like today (last scaled value of each window)."""

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(windows[:, -1, 0], dtype=np.float32)


def naive_artifact(key: str, values: np.ndarray, directory: Path) -> Artifact:
    """An in-memory artifact for the naive forecaster, calibrated on the history only.

    Its series gets a seasonal period exactly as training gives one (`estimate_period` on
    the history), so naive and LSTM differ in the forecaster only.
    """
    offset, scale = fit_scale(values, "standard")
    residual = np.diff((values - offset) / scale) if values.size > 1 else np.zeros(1)
    stats = {
        "mean": float(residual.mean()),
        "std": float(residual.std()),
        "abs_quantiles": {
            q: float(np.quantile(np.abs(residual), float(q))) for q in ("0.5", "0.9", "0.99")
        },
        "n": int(residual.size),
    }
    doc = {
        "schema_version": SCHEMA_VERSION,
        "version": f"naive-{key}",
        "created_at": "1970-01-01T00:00:00Z",
        "code_version": "iotad nab naive baseline",
        "model": {"cell": "lstm", "units": [1], "bidirectional": False},
        "window_len": 1,
        "horizon": 1,
        "features": ["value"],
        "scaling": {
            "method": "standard",
            "per_series": {
                key: {
                    "offset": offset,
                    "scale": scale,
                    "period": estimate_period(values[-PERIOD_SAMPLE:]),
                }
            },
        },
        "calibration": {"per_series": {key: stats}, "global": stats},
        "files": {"keras": "none.keras", "tflite": {"1": "none.tflite"}},
    }
    return parse_artifact(doc, directory)


# One small model per file, many files: no console chatter and no training plots. NAB's
# histories give 150-570 training windows, so the pipeline's batch of 256 would mean one or
# two gradient steps per epoch; 32 gets the forecast below the naive one (measured).
# No alert calibration: a NAB history is the probationary 15 %, a few hundred readings whose
# held-out fifth is too short to calibrate on, and NAB sweeps its own threshold anyway.
TRAIN_DEFAULTS: dict[str, Any] = {
    "quiet": True,
    "plots": False,
    "batch_size": 32,
    "alert_budget": 0.0,
}


def _train_config(overrides: dict[str, Any]) -> Any:
    """The pipeline's `TrainConfig` with `TRAIN_DEFAULTS`, then `overrides`, applied by name."""
    from training.pipeline import TrainConfig

    cfg = TrainConfig()
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"TrainConfig has no field(s) {', '.join(unknown)}")
    chosen = {k: v for k, v in TRAIN_DEFAULTS.items() if k in known} | overrides
    # JSON gives lists where TrainConfig holds tuples (units, batch_sizes).
    chosen = {k: tuple(v) if isinstance(v, list) else v for k, v in chosen.items()}
    return dataclasses.replace(cfg, **chosen)


def fit_forecaster(
    key: str, ts: np.ndarray, values: np.ndarray, cfg: ReplayConfig, work_dir: Path
) -> tuple[Artifact, Forecaster, dict[str, Any]]:
    """Fit the replay's forecaster on history rows only; returns artifact, forecaster, info.

    ``lstm`` trains with the project's pipeline and runs the LiteRT export, as the worker
    does; ``naive`` needs no training (a baseline for what the model adds).
    """
    if cfg.model == "naive":
        return naive_artifact(key, values, work_dir), LastValueForecaster(), {"model": "naive"}
    if cfg.model != "lstm":
        raise ValueError(f"unknown model {cfg.model!r} (one of {', '.join(MODELS)})")
    from detector.engine.forecaster import LiteRTForecaster
    from training.pipeline import train_series

    train_cfg = _train_config(cfg.train_overrides)
    earlier = _reusable(work_dir, {key: (ts, values)}, train_cfg) if cfg.reuse_models else None
    if earlier is not None:
        info = {"model": "lstm", "artifact_dir": str(work_dir), "reused": True}
        info.update({k: earlier.metrics.get(k) for k in _METRICS_KEPT})
        return earlier, LiteRTForecaster.from_artifact(earlier, num_threads=1), info
    result = train_series({key: (ts, values)}, train_cfg, work_dir)
    artifact = load_artifact(result.artifact_dir)
    return artifact, LiteRTForecaster.from_artifact(artifact, num_threads=1), _train_facts(result)


def _reusable(work_dir: Path, series: dict[str, Any], train_cfg: Any) -> Artifact | None:
    """The artifact in `work_dir` if it was trained on `series` with `train_cfg`'s options."""
    import json

    from detector.engine.artifact import ArtifactError
    from training.data import series_fingerprint

    try:
        artifact = load_artifact(work_dir)
    except (ArtifactError, OSError):
        return None
    training = artifact.training
    same_options = training.get("options") == json.loads(json.dumps(train_cfg.options()))
    same_data = training.get("data_fingerprint") == series_fingerprint(series)
    return artifact if same_options and same_data else None


_METRICS_KEPT = ("val_rmse_scaled", "naive_rmse_scaled", "rmse_ratio_vs_naive", "tflite_max_diff")


def _train_facts(result: Any) -> dict[str, Any]:
    """The few training facts worth a line in summary.json (the full report stays on disk)."""
    report = result.report if isinstance(getattr(result, "report", None), dict) else {}
    metrics = report.get("metrics", {})
    keep = _METRICS_KEPT
    return {
        "model": "lstm",
        "artifact_dir": str(result.artifact_dir),
        "version": report.get("version"),
        "epochs_run": report.get("training", {}).get("epochs_run"),
        "train_windows": report.get("training", {}).get("train_windows"),
        **{k: metrics.get(k) for k in keep},
        "timing_s": report.get("timing_s"),
    }


def replay_series(
    core: DetectionCore,
    device: str,
    metric: str,
    ts: np.ndarray,
    values: np.ndarray,
    first_row: int,
    score_from: int,
    chunk_rows: int,
) -> dict[str, np.ndarray]:
    """Feed rows ``first_row..`` through `core` in time order; rows before `score_from` only
    prime it. Returns row-aligned arrays (NaN / PROBATION for rows whose output is unused).

    Chunks are cut at ``score_from + k * chunk_rows`` whatever the file's length, so a file
    and any prefix of it send the same batches (the last one excepted) to the forecaster.
    """
    n = len(ts)
    out = {k: np.full(n, np.nan) for k in ("core_score", "expected", "lower", "upper")}
    out["is_anomaly"] = np.zeros(n, dtype=bool)
    out["onset"] = np.zeros(n, dtype=bool)
    out["status"] = np.full(n, PROBATION, dtype=np.int8)
    bounds = [first_row, *range(score_from, n, chunk_rows), n]
    for lo, hi in itertools.pairwise(bounds):
        if hi <= lo:
            continue
        readings = [Reading(device, metric, float(ts[i]), float(values[i])) for i in range(lo, hi)]
        # The core hands back the very Reading objects it was given: map them to rows by id.
        row_of = {id(r): lo + j for j, r in enumerate(readings)}
        result = core.process(readings, now=0.0)
        if lo < score_from:
            continue  # priming: the core learns the window, nothing is reported
        out["status"][lo:hi] = WARMING
        for d in result.dropped:
            out["status"][row_of[id(d.reading)]] = DROPPED
        for s in result.scored:
            row = row_of[id(s.reading)]
            out["status"][row] = SCORED
            out["core_score"][row] = s.score
            out["expected"][row] = s.expected
            out["lower"][row], out["upper"][row] = s.lower, s.upper
            out["is_anomaly"][row] = s.is_anomaly
            out["onset"][row] = s.onset
    return out


def replay_file(
    name: str,
    ts: np.ndarray,
    values: np.ndarray,
    history_rows: int,
    cfg: ReplayConfig,
    work_dir: Path,
) -> FileReplay:
    """Fit on ``values[:history_rows]``, then score every later row through the core.

    `history_rows` is NAB's probationary length of the *whole* file (the caller's job, so
    that a prefix of a file replays with the same history).
    """
    key = "/".join(series_names(name))
    started = time.perf_counter()
    artifact, forecaster, info = fit_forecaster(
        key, ts[:history_rows], values[:history_rows], cfg, work_dir
    )
    replay = replay_fitted(name, ts, values, history_rows, artifact, forecaster, cfg)
    replay.fit_s = time.perf_counter() - started - replay.replay_s
    replay.model_info = info
    return replay


def replay_fitted(
    name: str,
    ts: np.ndarray,
    values: np.ndarray,
    history_rows: int,
    artifact: Artifact,
    forecaster: Forecaster,
    cfg: ReplayConfig,
) -> FileReplay:
    """Score rows ``history_rows..`` with an already fitted forecaster, in a fresh core."""
    started = time.perf_counter()
    device, metric = series_names(name)
    core = DetectionCore(artifact, forecaster, cfg.detection)
    prime = history_rows if cfg.prime_rows is None else cfg.prime_rows
    first_row = max(0, history_rows - prime)
    trace = replay_series(core, device, metric, ts, values, first_row, history_rows, cfg.chunk_rows)
    return FileReplay(
        name=name,
        timestamps=np.asarray(ts, dtype=np.float64),
        values=np.asarray(values, dtype=np.float64),
        history_rows=history_rows,
        anomaly_score=nab_anomaly_score(
            trace["core_score"], trace["is_anomaly"], trace["onset"], cfg.detection.threshold
        ),
        replay_s=time.perf_counter() - started,
        core_score=trace["core_score"],
        expected=trace["expected"],
        lower=trace["lower"],
        upper=trace["upper"],
        is_anomaly=trace["is_anomaly"],
        onset=trace["onset"],
        status=trace["status"],
    )
