"""What a training run tells about itself: metrics, per-series figures, the summary lines.

Pure NumPy over the pipeline's arrays; the pipeline puts the results into ``artifact.json``
(metrics) and ``report.json`` (everything).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.calibration import rmse
from training.windowing import WindowSet

PLOT_SERIES = 3
"""Series drawn in forecast.png (those with the most validation windows)."""


def seasonal_naive(ws: WindowSet, pos: np.ndarray) -> np.ndarray:
    """The seasonal-naive forecast of targets `pos`: the value one season earlier (the
    series' own period where training found one, else one day at its median interval);
    NaN where the series has no reading that far back."""
    pos = np.asarray(pos)
    out = np.full(pos.shape, np.nan, dtype=np.float64)
    sid = ws.series_id[pos]
    for s, key in enumerate(ws.keys):
        mask = sid == s
        if not mask.any():
            continue
        members = np.flatnonzero(ws.series_id == s)
        first = members[0]
        period = ws.periods.get(key)
        if not period:
            step = float(np.median(np.diff(ws.ts[members]))) if members.size > 1 else 0.0
            period = round(86_400.0 / step) if step > 0 else 0
        if period < 1:
            continue
        back = pos[mask] - period
        ok = back >= first
        vals = np.full(back.shape, np.nan)
        vals[ok] = ws.values[back[ok]]
        out[mask] = vals
    return out


def _rmse_finite(errors: np.ndarray) -> float | None:
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    return rmse(e) if e.size else None


def metrics(
    residual: np.ndarray,
    naive_error: np.ndarray,
    global_errors: dict[str, Any],
    tflite_max_diff: float,
    seasonal_error: np.ndarray | None = None,
) -> dict[str, Any]:
    """The artifact's ``metrics``: validation fit against the naive (last value) and
    seasonal-naive (one season ago) baselines, the export check."""
    val_rmse, naive_rmse = rmse(residual), rmse(naive_error)
    seasonal = None if seasonal_error is None else np.isfinite(seasonal_error)
    seasonal_rmse = None if seasonal_error is None else _rmse_finite(seasonal_error)
    model_on_seasonal = None if seasonal is None else _rmse_finite(residual[seasonal])
    return {
        "val_loss": val_rmse**2,
        "val_rmse_scaled": val_rmse,
        "naive_rmse_scaled": naive_rmse,
        # Below 1 the model forecasts better than repeating the last value.
        "rmse_ratio_vs_naive": val_rmse / naive_rmse if naive_rmse > 0 else None,
        "seasonal_naive_rmse_scaled": seasonal_rmse,
        # On the validation targets that have a reading one season back.
        "rmse_ratio_vs_seasonal_naive": (
            model_on_seasonal / seasonal_rmse
            if seasonal_rmse and model_on_seasonal is not None
            else None
        ),
        # LiteRT against Keras, relative to the forecast (export.forecast_diff).
        "tflite_max_diff": tflite_max_diff,
        "residual_mean": global_errors["mean"],
        "residual_std": global_errors["std"],
        "residual_abs_quantiles": global_errors["abs_quantiles"],
    }


def per_series(
    ws: WindowSet,
    residual: np.ndarray,
    naive_error: np.ndarray,
    seasonal_error: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Readings, windows and validation RMSE (model, naive, seasonal-naive) of each series."""
    k = len(ws.keys)
    val_ids = ws.series_id[ws.val_pos]
    count = np.bincount(val_ids, minlength=k)
    sse = np.bincount(val_ids, weights=np.square(residual, dtype=np.float64), minlength=k)
    sse_naive = np.bincount(val_ids, weights=np.square(naive_error, dtype=np.float64), minlength=k)
    readings = np.bincount(ws.series_id, minlength=k)
    out = {}
    for sid, key in enumerate(ws.keys):
        n = int(count[sid])
        out[key] = {
            "readings": int(readings[sid]),
            "train_readings": ws.n_train_readings[key],
            "val_windows": n,
            "val_rmse_scaled": float(np.sqrt(sse[sid] / n)) if n else None,
            "naive_rmse_scaled": float(np.sqrt(sse_naive[sid] / n)) if n else None,
        }
        if seasonal_error is not None:
            mine = val_ids == sid
            out[key]["seasonal_naive_rmse_scaled"] = _rmse_finite(seasonal_error[mine])
    return out


def forecast_panels(
    ws: WindowSet, predicted: np.ndarray, n_series: int = PLOT_SERIES
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(key, ts, actual, predicted)`` in original units for the series with most windows."""
    val_ids = ws.series_id[ws.val_pos]
    counts = np.bincount(val_ids, minlength=len(ws.keys))
    panels = []
    for sid in np.argsort(-counts, kind="stable")[:n_series]:
        if counts[sid] == 0:
            break
        key = ws.keys[int(sid)]
        offset, scale = ws.scales[key]
        mask = val_ids == sid
        pos = ws.val_pos[mask]
        actual = ws.values[pos].astype(np.float64) * scale + offset
        forecast = predicted[mask].astype(np.float64) * scale + offset
        panels.append((key, ws.ts[pos], actual, forecast))
    return panels


def summary_lines(report: dict[str, Any]) -> Sequence[str]:
    """A short human summary of a finished run."""
    m = report["metrics"]
    ratio = m["rmse_ratio_vs_naive"]
    ratio_text = f"{ratio:.3f}" if ratio is not None else "n/a"
    lines = [
        f"artifact: {report['artifact_dir']} (version {report['version']})",
        f"validation RMSE {m['val_rmse_scaled']:.4f} vs naive {m['naive_rmse_scaled']:.4f} "
        f"(ratio {ratio_text}, scaled units) after {report['training']['epochs_run']} epochs",
        f"LiteRT vs Keras max diff {m['tflite_max_diff']:.2g}; "
        f"{report['timing_s']['total_s']:.1f} s in total",
    ]
    seasonal = m.get("rmse_ratio_vs_seasonal_naive")
    if seasonal is not None:
        lines.insert(2, f"validation RMSE ratio vs seasonal-naive (one season ago) {seasonal:.3f}")
    continued = report.get("training", {}).get("continued_from")
    if continued:
        from training.continuation import summary_line

        lines.insert(1, summary_line(continued))
    alerting = report.get("alerting")
    if alerting:
        held = alerting["heldout"]
        lines.append(
            f"alerting: {held['alerts']} alerts on {held['days']:.2f} held-out days of "
            f"{held['series']} series ({held['alerts_per_series_day']:.3f} per series-day, "
            f"budget {alerting['budget']:g}; {held['alerts_without_calibration']} uncalibrated)"
            f", z scale {alerting['z_scale']:.3g}"
            + ("" if held["budget_reachable"] else "; budget NOT reachable")
        )
    return lines
