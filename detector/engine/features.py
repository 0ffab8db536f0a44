"""Model inputs: scaled values plus optional calendar features, shared by training and worker.

Training (`training/`) and the detection core build the model's input with the very same
functions here, so a feature cannot mean one thing offline and another online.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
# 1970-01-01 was a Thursday; shifting by 3 days puts Monday 00:00 UTC at phase 0.
_WEEK_ORIGIN_S = 3 * DAY_S

TIME_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")


def time_features(ts: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Calendar features of epoch-second timestamps `ts` (any shape), UTC.

    Returns an array of shape ``ts.shape + (len(names),)``; each name is one of
    `TIME_FEATURES`: sine/cosine of the time of day and of the time in the week.
    """
    ts = np.asarray(ts, dtype=np.float64)
    out = np.empty((*ts.shape, len(names)), dtype=np.float32)
    day_phase = 2 * np.pi * np.mod(ts, DAY_S) / DAY_S
    week_phase = 2 * np.pi * np.mod(ts + _WEEK_ORIGIN_S, WEEK_S) / WEEK_S
    for i, name in enumerate(names):
        if name == "tod_sin":
            out[..., i] = np.sin(day_phase)
        elif name == "tod_cos":
            out[..., i] = np.cos(day_phase)
        elif name == "dow_sin":
            out[..., i] = np.sin(week_phase)
        elif name == "dow_cos":
            out[..., i] = np.cos(week_phase)
        else:
            raise ValueError(f"unknown time feature {name!r}")
    return out


def model_input(
    scaled_values: np.ndarray, ts: np.ndarray | None, features: Sequence[str]
) -> np.ndarray:
    """Stack scaled windows ``(B, W)`` and their timestamps ``(B, W)`` into ``(B, W, F)``.

    `features` is the artifact's feature list; its first entry is always ``"value"``.
    `ts` may be None when the features are only ``("value",)``.
    """
    scaled_values = np.asarray(scaled_values, dtype=np.float32)
    if len(features) == 1:
        return scaled_values[..., np.newaxis]
    if ts is None:
        raise ValueError("timestamps are needed for time features")
    extra = time_features(ts, features[1:])
    return np.concatenate([scaled_values[..., np.newaxis], extra], axis=-1)


def fit_scale(values: np.ndarray, method: str) -> tuple[float, float]:
    """Normalisation ``(offset, scale)`` of `values` for `method` "standard" or "minmax".

    A constant series gets scale 1 so that scaling never divides by zero.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return 0.0, 1.0
    if method == "standard":
        offset, scale = float(values.mean()), float(values.std())
    elif method == "minmax":
        offset, scale = float(values.min()), float(values.max() - values.min())
    else:
        raise ValueError(f"unknown scaling method {method!r}")
    if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, abs(offset)):
        scale = 1.0
    return offset, scale
