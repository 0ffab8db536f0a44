"""The factory benchmark: train on a simulated plant's history, detect in its labelled stream.

Per (fleet shape, seed) a `Scenario` is simulated once; per model:

1. fit: ``lstm`` trains with the project's pipeline (`training.pipeline.train_series`, its
   default options unless overridden) and runs the LiteRT export as the worker does;
   ``naive`` is the last-value forecaster with no training, calibrated on the same history;
2. replay: a fresh `DetectionCore` first sees the last `prime_days` of history (the worker
   had been running), then the stream, **one `process` call per timestamp** holding every
   series that reported at it (what a ``sensors/{device}`` payload per device delivers),
   with ``now=ts``;
3. score: the firing alerts of the stream are matched to the faults (`training.factory_match`),
   and the core's forecasts are compared with naive and seasonal-naive on fault-free readings.

A fit or replay that fails is kept as a run with no alerts (every fault missed) and its error.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.engine.artifact import SCHEMA_VERSION, Artifact, parse_artifact
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.features import fit_scale
from detector.engine.forecaster import Forecaster
from detector.engine.readings import Reading
from detector.sim.faults import ALL_METRICS, FAULT_KINDS, Fault
from detector.sim.plant_schedule import DAY_S
from detector.worker.rules_file import load_rules
from training.factory_match import DEFAULT_GRACE, Alert, Outcome, match
from training.factory_scenario import (
    SHAPES,
    Scenario,
    alert_context,
    build_scenario,
    fault_regimes,
    near_change_fraction,
)
from training.nab_replay import LastValueForecaster

MODELS = ("lstm", "naive")
TAINT_READINGS = 64
"""Readings after a fault whose forecasts are left out of the RMSE (a model's window still
holds faulty readings; 64 covers the default window of 32 twice)."""
TRAIN_DEFAULTS: dict[str, Any] = {"quiet": True, "plots": False}
"""What the benchmark changes of `TrainConfig` by default: output only, not the model."""


@dataclass(frozen=True)
class BenchConfig:
    """What `iotad eval factory` runs."""

    shapes: tuple[str, ...] = ("2shift-staggered",)
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = MODELS
    history_days: float = 14.0
    stream_days: float = 3.0
    faults_per_kind: int = 6
    prime_days: float = 1.0
    grace: int = DEFAULT_GRACE
    interval_s: float = 60.0
    kinds: tuple[str, ...] = FAULT_KINDS
    train_overrides: dict[str, Any] = field(default_factory=dict)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    rules: Path | None = None
    """A rules file applied in the core (`detector.engine.rules`), as `iotad run` would."""

    def validate(self) -> None:
        if unknown := set(self.shapes) - set(SHAPES):
            raise ValueError(f"unknown fleet shape(s) {sorted(unknown)}; known: {list(SHAPES)}")
        if unknown := set(self.models) - set(MODELS):
            raise ValueError(f"unknown model(s) {sorted(unknown)}; known: {list(MODELS)}")
        if not 0 <= self.prime_days <= self.history_days:
            raise ValueError("prime_days must be between 0 and history_days")

    def scenario(self, shape: str, seed: int) -> Scenario:
        return build_scenario(
            SHAPES[shape],
            seed,
            history_days=self.history_days,
            stream_days=self.stream_days,
            faults_per_kind=self.faults_per_kind,
            interval_s=self.interval_s,
            grace=self.grace,
            kinds=self.kinds,
        )


QUICK = BenchConfig(
    shapes=("small",),
    seeds=(0,),
    history_days=3.0,
    stream_days=1.0,
    faults_per_kind=2,
    prime_days=0.5,
    train_overrides={"epochs": 3, "max_windows": 2048},
)
"""`--quick`: one small plant, 3 days of history, 1 day of stream, 18 faults."""


@dataclass
class RunResult:
    """One model on one scenario: its alerts, what they matched, its forecasts' errors."""

    shape: str
    seed: int
    model: str
    faults: list[Fault]
    alerts: list[Alert]
    outcomes: list[Outcome]
    matched: list[int | None]
    n_series: int
    series_days: float
    rmse: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    regimes: list[str] = field(default_factory=list)
    """What each fault's machine was doing when it began (aligned with `faults`)."""
    alert_contexts: list[str] = field(default_factory=list)
    """Where each alert fired (`training.factory_scenario.alert_context`; aligned with
    `alerts`)."""


# -- forecasters ----------------------------------------------------------------------------


def naive_artifact(series: dict[str, tuple[np.ndarray, np.ndarray]], directory: Path) -> Artifact:
    """An in-memory artifact for `LastValueForecaster`, laid out as the pipeline's are: per
    series scale (on the first 80 %), range, period, and residual statistics of the last
    20 % (the pipeline's split), so the core treats both models alike."""
    from training.calibration import calibrate
    from training.pipeline import TrainConfig
    from training.windowing import build_windows

    defaults = TrainConfig()
    ws = build_windows(series, 1, defaults.split, defaults.scaling)
    residual = ws.targets(ws.val_pos) - ws.last_values(ws.val_pos)
    per_series, pooled = calibrate(residual, ws.series_id[ws.val_pos], ws.keys)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "version": "naive-last-value",
        "created_at": "1970-01-01T00:00:00Z",
        "code_version": "iotad factory naive baseline",
        "model": {"cell": "lstm", "units": [1], "bidirectional": False},
        "window_len": 1,
        "horizon": 1,
        "features": ["value"],
        "scaling": {
            "method": defaults.scaling,
            "per_series": {
                key: {
                    "offset": offset,
                    "scale": scale,
                    "low": ws.ranges[key][0],
                    "high": ws.ranges[key][1],
                    "period": ws.periods.get(key),
                    "repeat_run": ws.repeat_runs.get(key),
                }
                for key, (offset, scale) in ws.scales.items()
            },
        },
        "calibration": {"per_series": per_series, "global": pooled},
        "files": {"keras": "none.keras", "tflite": {"1": "none.tflite"}},
    }
    return parse_artifact(doc, directory)


def _train_config(overrides: dict[str, Any]) -> Any:
    from training.pipeline import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown := sorted(set(overrides) - known):
        raise ValueError(f"TrainConfig has no field(s) {', '.join(unknown)}")
    chosen = TRAIN_DEFAULTS | overrides
    chosen = {k: tuple(v) if isinstance(v, list) else v for k, v in chosen.items()}
    return dataclasses.replace(TrainConfig(), **chosen)


def fit(
    model: str, scenario: Scenario, overrides: dict[str, Any], work_dir: Path
) -> tuple[Artifact, Forecaster, dict[str, Any]]:
    """The artifact and forecaster of `model`, fitted on the scenario's history only."""
    series = scenario.history.series(scenario.devices, scenario.metrics)
    if model == "naive":
        # The same alert calibration as a trained artifact gets, or the comparison is unfair.
        from training.alerting import DEFAULT_BUDGET, calibrate_artifact
        from training.pipeline import TrainConfig
        from training.windowing import split_point

        artifact, forecaster = naive_artifact(series, work_dir), LastValueForecaster()
        budget = float(overrides.get("alert_budget", DEFAULT_BUDGET))
        info: dict[str, Any] = {"model": "naive"}
        if budget > 0:
            split = TrainConfig().split
            n_train = {k: split_point(len(ts), split) for k, (ts, _) in series.items()}
            cal = calibrate_artifact(artifact, forecaster, series, n_train, budget)
            artifact = dataclasses.replace(
                artifact,
                alert_z_scale=cal.z_scale,
                alert_budget=budget,
                alert_signal_scales=cal.signal_scales or {},
            )
            info["alerting"] = cal.to_dict(budget)
        return artifact, forecaster, info
    from detector.engine.artifact import load_artifact
    from detector.engine.forecaster import LiteRTForecaster
    from training.pipeline import train_series

    result = train_series(series, _train_config(overrides), work_dir)
    artifact = load_artifact(result.artifact_dir)
    metrics = result.report.get("metrics", {})
    info = {
        "model": "lstm",
        "artifact_dir": str(result.artifact_dir),
        "epochs_run": result.report.get("training", {}).get("epochs_run"),
        "val_rmse_ratio_vs_naive": metrics.get("rmse_ratio_vs_naive"),
        "options": result.report.get("training", {}).get("options"),
    }
    return artifact, LiteRTForecaster.from_artifact(artifact, num_threads=1), info


# -- replay ---------------------------------------------------------------------------------


def prime_ticks(scenario: Scenario, prime_days: float) -> int:
    """How many of the history's last ticks go through the core before the stream."""
    return min(len(scenario.history.ts), round(prime_days * DAY_S / scenario.interval_s))


def batches(scenario: Scenario, primed: int) -> Iterator[tuple[bool, int, float, list[Reading]]]:
    """``(in_stream, tick, ts, readings)`` per timestamp: the last `primed` history ticks,
    then the stream; readings of the devices that report, in device then metric order."""
    for in_stream, block in ((False, scenario.history), (True, scenario.stream)):
        first = len(block.ts) - primed if not in_stream else 0
        for t in range(first, len(block.ts)):
            ts = float(block.ts[t])
            readings = [
                Reading(device, metric, ts, float(block.values[t, d, m]))
                for d, device in enumerate(scenario.devices)
                if block.present[t, d]
                for m, metric in enumerate(scenario.metrics)
            ]
            yield in_stream, t, ts, readings


@dataclass
class Replay:
    """What the core did: firing alerts (priming ones apart) and the stream's forecasts."""

    alerts: list[Alert]
    priming_alerts: list[Alert]
    expected: np.ndarray
    """Forecast (raw units) of each stream reading ``[t, d, m]``; NaN where not scored."""
    readings: int = 0
    dropped: int = 0


def replay(core: DetectionCore, scenario: Scenario, primed: int) -> Replay:
    """Feed the primed history and the stream through `core`, one batch per timestamp."""
    expected = np.full(scenario.stream.values.shape, np.nan)
    index = {
        f"{device}/{metric}": (d, m)
        for d, device in enumerate(scenario.devices)
        for m, metric in enumerate(scenario.metrics)
    }
    out = Replay([], [], expected)
    for in_stream, t, ts, readings in batches(scenario, primed):
        if not readings:
            continue
        result = core.process(readings, now=ts)
        out.readings += len(readings)
        out.dropped += len(result.dropped)
        for event in result.events:
            if event.state == "firing":
                alert = Alert(event.device, event.metric, event.ts, event.score, event.signal)
                (out.alerts if in_stream else out.priming_alerts).append(alert)
        if in_stream:
            for s in result.scored:
                d, m = index[s.reading.key]
                expected[t, d, m] = s.expected
    return out


# -- forecast errors ------------------------------------------------------------------------


def _tainted(scenario: Scenario, ts: np.ndarray) -> np.ndarray:
    """``[t, d, m]`` True where a fault, or the `TAINT_READINGS` after it, touch a reading."""
    out = np.zeros((len(ts), len(scenario.devices), len(scenario.metrics)), dtype=bool)
    for f in scenario.faults:
        d = scenario.devices.index(f.device)
        span = (ts >= f.start_ts) & (ts < f.end_ts + TAINT_READINGS * scenario.interval_s)
        if f.metric == ALL_METRICS:
            out[span, d, :] = True
        else:
            out[span, d, scenario.metrics.index(f.metric)] = True
    return out


def forecast_rmse(scenario: Scenario, expected: np.ndarray) -> dict[str, Any]:
    """RMSE of the core's forecasts, of naive (the series' last reading) and of
    seasonal-naive (the reading one day before), in units of each series' history std, on
    the stream's readings that no fault touched (nor the reading before, nor a day before)."""
    h, s = scenario.history, scenario.stream
    ts = np.concatenate([h.ts, s.ts])
    values = np.concatenate([h.values, s.values])
    present = np.concatenate([h.present, s.present])[:, :, None] & np.ones(values.shape, bool)
    ok = present & ~_tainted(scenario, ts)
    n_hist, period = len(h.ts), round(DAY_S / scenario.interval_s)
    rows = np.arange(n_hist, len(ts))
    # The last reading each series sent before each tick (silent ticks carry it forward).
    last = np.where(present, values, np.nan)
    for t in range(1, len(ts)):
        gap = np.isnan(last[t])
        last[t][gap] = last[t - 1][gap]
    last_ok = ok.copy()
    for t in range(1, len(ts)):
        gap = ~present[t]
        last_ok[t][gap] = last_ok[t - 1][gap]
    naive = last[rows - 1]
    seasonal = np.where(present[rows - period], values[rows - period], np.nan)
    use = ok[rows] & last_ok[rows - 1] & ok[rows - period] & np.isfinite(expected)
    scale = np.array(
        [
            [
                fit_scale(h.values[h.present[:, d], d, m], "standard")[1]
                for m in range(values.shape[2])
            ]
            for d in range(values.shape[1])
        ]
    )
    truth = values[rows]

    def rmse(forecast: np.ndarray, mask: np.ndarray) -> float | None:
        err = ((truth - forecast) / scale)[mask]
        return float(np.sqrt(np.mean(err * err))) if err.size else None

    def row(mask: np.ndarray) -> dict[str, Any]:
        model, n, sn = rmse(expected, mask), rmse(naive, mask), rmse(seasonal, mask)
        return {
            "readings": int(mask.sum()),
            "model": model,
            "naive": n,
            "seasonal_naive": sn,
            "ratio_vs_naive": model / n if model is not None and n else None,
            "ratio_vs_seasonal": model / sn if model is not None and sn else None,
        }

    per_metric = {}
    for m, metric in enumerate(scenario.metrics):
        mask = np.zeros_like(use)
        mask[:, :, m] = use[:, :, m]
        per_metric[metric] = row(mask)
    return {"pooled": row(use), "per_metric": per_metric, "unit": "history std per series"}


# -- one run --------------------------------------------------------------------------------


def evaluate(scenario: Scenario, model: str, cfg: BenchConfig, work_dir: Path) -> RunResult:
    """Fit `model`, replay, match and measure; a failure becomes a run with no alerts."""
    result = RunResult(
        shape=scenario.shape.name,
        seed=scenario.seed,
        model=model,
        faults=scenario.faults,
        alerts=[],
        outcomes=[],
        matched=[],
        n_series=scenario.n_series,
        series_days=scenario.n_series * scenario.stream_days,
        regimes=fault_regimes(scenario),
        info={"near_change_time_fraction": round(near_change_fraction(scenario), 4)},
    )
    started = time.perf_counter()
    try:
        artifact, forecaster, info = fit(model, scenario, cfg.train_overrides, work_dir)
        result.info.update(info)
        result.info["fit_s"] = round(time.perf_counter() - started, 1)
        t = time.perf_counter()
        rules = None if cfg.rules is None else load_rules(cfg.rules)
        core = DetectionCore(artifact, forecaster, cfg.detection, rules)
        trace = replay(core, scenario, prime_ticks(scenario, cfg.prime_days))
        result.info["replay_s"] = round(time.perf_counter() - t, 1)
        result.info.update(
            readings=trace.readings,
            dropped=trace.dropped,
            priming_alerts=len(trace.priming_alerts),
        )
        result.alerts = trace.alerts
        result.rmse = forecast_rmse(scenario, trace.expected)
    except Exception as exc:  # a failed run counts as no detections, and says why
        result.error = f"{type(exc).__name__}: {exc}"
        result.info["traceback"] = traceback.format_exc(limit=5)
        result.alerts = []
    result.outcomes, result.matched = match(
        scenario.faults, result.alerts, scenario.interval_s, cfg.grace
    )
    result.alert_contexts = [alert_context(scenario, a.device, a.ts) for a in result.alerts]
    return result


def case_dir(out: Path, shape: str, seed: int) -> Path:
    """Where a run in `out` keeps the models of one (shape, seed), one folder per model."""
    return out / "models" / f"{shape}-seed{seed}"


def evaluate_case(shape: str, seed: int, cfg: BenchConfig, out: Path) -> list[RunResult]:
    """Every model of `cfg` on one (shape, seed); picklable, for worker processes."""
    scenario = cfg.scenario(shape, seed)
    work = case_dir(out, shape, seed)
    work.mkdir(parents=True, exist_ok=True)
    return [evaluate(scenario, model, cfg, work / model) for model in cfg.models]
