"""Threshold calibration: forecast residual statistics on the validation split.

The worker seeds its per-series error statistics from these, so it can score a series from
its first full window instead of waiting to learn what a normal error looks like.
All numbers are in *scaled* units (residual = scaled target - scaled forecast).
"""

from __future__ import annotations

import numpy as np

QUANTILES = ("0.5", "0.9", "0.99", "0.999")


def error_stats(residuals: np.ndarray) -> dict[str, object]:
    """Mean and std of the residuals and of their absolute values, |residual| quantiles, n.

    The layout is what `detector.engine.artifact.ErrorStats` reads; the worker's scorer uses the
    mean and std of |residual| as they are rather than assume normal residuals. An empty
    input gives zeros.
    """
    r = np.asarray(residuals, dtype=np.float64).reshape(-1)
    if r.size == 0:
        return {
            "mean": 0.0,
            "std": 0.0,
            "abs_quantiles": dict.fromkeys(QUANTILES, 0.0),
            "n": 0,
            "abs_mean": 0.0,
            "abs_std": 0.0,
        }
    absolute = np.abs(r)
    return {
        "mean": float(r.mean()),
        "std": float(r.std()),
        "abs_quantiles": {q: float(np.quantile(absolute, float(q))) for q in QUANTILES},
        "n": int(r.size),
        "abs_mean": float(absolute.mean()),
        "abs_std": float(absolute.std()),
    }


def calibrate(
    residuals: np.ndarray, series_ids: np.ndarray, keys: list[str]
) -> tuple[dict[str, dict[str, object]], dict[str, object]]:
    """Per-series and pooled residual statistics.

    `series_ids[i]` indexes `keys` for residual `i`; a series without validation windows
    gets no entry (the worker falls back to the pooled statistics).
    """
    residuals = np.asarray(residuals, dtype=np.float64).reshape(-1)
    series_ids = np.asarray(series_ids).reshape(-1)
    order = np.argsort(series_ids, kind="stable")
    ids, starts = np.unique(series_ids[order], return_index=True)
    groups = np.split(residuals[order], starts[1:])
    per_series = {
        keys[int(sid)]: error_stats(group) for sid, group in zip(ids, groups, strict=True)
    }
    return per_series, error_stats(residuals)


def rmse(errors: np.ndarray) -> float:
    """Root mean square of `errors` (0 for none)."""
    e = np.asarray(errors, dtype=np.float64)
    return float(np.sqrt(np.mean(e * e))) if e.size else 0.0
