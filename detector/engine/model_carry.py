"""Carrying a detection state over to another model version (hot reload, or a restart with a
new artifact and an old checkpoint). Pure numpy on `DetectionCore.snapshot()` dicts.

What a series keeps, and why (docs/model-lifecycle.md has the table):

* **Windows, order bounds, gaps, silence, flatline runs, episodes** depend on the readings
  only: kept. A new window length re-lays the windows: the newest ``min(old, new)``
  readings stay, so a shorter window is ready at once and a longer one waits only for the
  readings it lacks. Input features (time of day, day of week) are computed from the kept
  timestamps, so a change of features needs nothing.
* **Normalisation:** a series the new artifact was trained on takes its offset and scale;
  any other keeps its own (the old artifact's, or the one fitted online).
* **Value statistics** (level, range, recent values, seasonal ring, device relations) are
  kept, converted to the new normalisation (an affine map per series). A series the new
  artifact knows takes the union of the range seen so far and its training range.
* **Error statistics** describe the *old* model's forecast errors. Rule ``calibration``
  (the default): a series the new artifact knows restarts them from its calibration, as a
  trained series does at first sight, and its recent error mean refills over the next
  `short_window` readings; the long run then forgets the calibration with the usual
  likelihood half-life. A series it does not know keeps the errors it learnt (its only
  alternative is the pooled calibration, which knows nothing about it). Rule ``keep``
  keeps every series' error statistics (converted), for comparison (bench/model_swap.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from detector.engine.artifact import Artifact
from detector.engine.scoring import MIN_STD, NO_RUN_YET, expected_abs

ErrorRule = Literal["calibration", "keep"]
ERROR_RULES: tuple[str, ...] = ("calibration", "keep")

# Arrays in scaled *value* units: x -> a x + b. Recent-mean rings are handled apart (only
# their filled entries move), as are the variances (x a^2).
_VALUE_MEANS = ("value_run_mean",)
_VALUE_VARS = ("value_run_var",)
# Arrays in scaled *difference* units (residuals of a forecast that is not the model's):
# x -> a x.
_DIFF_LINEAR = (
    "relation_ring",
    "relation_total",
    "relation_run_mean",
    "recent_seasonal_ring",
    "recent_seasonal_total",
    "seasonal_run_mean",
)
_DIFF_VARS = ("relation_run_var", "seasonal_run_var")
# The model's own errors.
_ERROR_LINEAR = ("err_mean", "recent_error_ring", "recent_error_total", "error_run_mean")
_ERROR_VARS = ("err_var", "error_run_var")
_SEASONAL_INITIAL = {
    "recent_seasonal_ring": 0.0,
    "recent_seasonal_total": 0.0,
    "recent_seasonal_count": 0,
    "seasonal_run_mean": 0.0,
    "seasonal_run_var": 1.0,
    "seasonal_seen": 0,
}


@dataclass(frozen=True, slots=True)
class CarryReport:
    """What a carry-over did, for one log line."""

    from_version: str
    to_version: str
    series: int
    calibrated: int
    """Series the new artifact was trained on: its normalisation and error calibration."""
    rescaled: int
    """Of those, series whose normalisation changed (value statistics converted)."""
    window_from: int
    window_to: int
    error_rule: str

    def line(self) -> str:
        window = (
            f"window {self.window_from}"
            if self.window_from == self.window_to
            else f"window {self.window_from} -> {self.window_to} (windows re-laid: "
            + (
                "the series wait for the readings they lack)"
                if self.window_to > self.window_from
                else "the newest readings kept)"
            )
        )
        errors = (
            "restarted from the new calibration" if self.error_rule == "calibration" else "kept"
        )
        return (
            f"state of model {self.from_version} carried over to {self.to_version}: "
            f"{self.series} series, {self.calibrated} with the new model's normalisation and "
            f"calibration ({self.rescaled} re-scaled), {window}; their forecast-error "
            f"statistics {errors}"
        )


def carry_over(
    state: dict[str, np.ndarray], artifact: Artifact, errors: ErrorRule = "calibration"
) -> tuple[dict[str, np.ndarray], CarryReport]:
    """`state` (a snapshot made under another model) as a snapshot for `artifact`.

    The input is not modified. Raises ValueError for a rule it does not know.
    """
    if errors not in ERROR_RULES:
        raise ValueError(f"error rule {errors!r} is not one of {', '.join(ERROR_RULES)}")
    out = {name: np.array(array, copy=True) for name, array in state.items()}
    keys = [str(k) for k in out["keys"].tolist()]
    n = len(keys)
    change = normalisation_change(keys, out, artifact)
    known, a, b = change.known, change.a, change.b
    had = out["has_scale"].astype(bool)
    rescaled = int(np.count_nonzero(known & had & ((a != 1.0) | (b != 0.0))))
    out["offset"], out["scale"] = change.offset, change.scale
    out["has_scale"] = had | known

    _convert(out, a, b)
    _range(out, keys, known, artifact)
    _repeat_runs(out, keys, known, artifact)
    _seasonal(out, keys, artifact)
    for prefix, shift in (("rel", True), ("rres", False)):
        _relations(out, keys, prefix, a, b if shift else np.zeros(n))
    if errors == "calibration":
        _errors_from_calibration(out, keys, known, artifact)
    if "trusted_stats" in out:
        out["trusted_stats"] = out["trusted_stats"].astype(bool) | known
    window_from = int(out["window_len"])
    if window_from != artifact.window_len:
        _relay_windows(out, artifact.window_len)
    out["model_version"] = np.array(artifact.version)
    out["window_len"] = np.array(artifact.window_len)
    report = CarryReport(
        from_version=str(state["model_version"]),
        to_version=artifact.version,
        series=n,
        calibrated=int(np.count_nonzero(known)),
        rescaled=rescaled,
        window_from=window_from,
        window_to=artifact.window_len,
        error_rule=errors,
    )
    return out, report


@dataclass(frozen=True)
class NormalisationChange:
    """Per series (rows of a snapshot): known to the new artifact, the new offset and scale,
    and the affine map ``x -> a x + b`` of scaled values from the old normalisation."""

    known: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    a: np.ndarray
    b: np.ndarray


def normalisation_change(
    keys: list[str], state: dict[str, np.ndarray], artifact: Artifact
) -> NormalisationChange:
    """How the normalisation of each series of `state` changes under `artifact`."""
    known = np.array([k in artifact.series_scales for k in keys], dtype=bool)
    old_offset = state["offset"].astype(np.float64)
    old_scale = state["scale"].astype(np.float64)
    new_offset, new_scale = old_offset.copy(), old_scale.copy()
    for i, key in enumerate(keys):
        scale = artifact.series_scales.get(key)
        if scale is not None:
            new_offset[i], new_scale[i] = scale.offset, scale.scale
    had = state["has_scale"].astype(bool)
    # x_new = (x_old * s + o - o') / s' for rows that had a scale; the rest have no scaled
    # statistics beyond their seed yet.
    a = np.where(had, old_scale / new_scale, 1.0)
    b = np.where(had, (old_offset - new_offset) / new_scale, 0.0)
    return NormalisationChange(known, new_offset, new_scale, a, b)


def _col(x: np.ndarray, array: np.ndarray) -> np.ndarray:
    """Per-row factors `x` shaped to broadcast over `array`'s trailing axes."""
    return x.reshape((-1,) + (1,) * (array.ndim - 1))


def _convert(out: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> None:
    def put(name: str, value: np.ndarray) -> None:
        out[name] = value.astype(out[name].dtype)

    for name in _VALUE_MEANS:
        if name in out:
            put(name, out[name] * a + b)
    for name in (*_VALUE_VARS, *_DIFF_VARS, *_ERROR_VARS):
        if name in out:
            put(name, out[name] * _col(a, out[name]) ** 2)
    for name in (*_DIFF_LINEAR, *_ERROR_LINEAR):
        if name in out:
            put(name, out[name] * _col(a, out[name]))
    if "low" in out:
        put("low", out["low"] * a + b)
        put("high", out["high"] * a + b)
    if "seasonal_ring" in out:
        seasonal = out["seasonal_ring"]  # unfilled entries are written before they are read
        put("seasonal_ring", seasonal * _col(a, seasonal) + _col(b, seasonal))
    # The recent values: only the filled entries (the rest are zeros outside the total).
    ring, total, count = (out.get(f"recent_value_{k}") for k in ("ring", "total", "count"))
    if ring is not None and total is not None and count is not None:
        length = ring.shape[1]
        filled = np.minimum(count.astype(np.int64), length)
        mask = np.arange(length)[np.newaxis, :] < filled[:, np.newaxis]
        moved = np.where(mask, ring * a[:, None] + b[:, None], ring)
        put("recent_value_ring", moved)
        put("recent_value_total", total * a + b * filled)


def _range(
    out: dict[str, np.ndarray], keys: list[str], known: np.ndarray, artifact: Artifact
) -> None:
    """A series the new artifact knows: the range seen so far joined with its training range."""
    if "low" not in out:
        return
    idx = np.flatnonzero(known)
    scales = [artifact.series_scales[keys[i]] for i in idx.tolist()]
    has = np.array([s.low is not None and s.high is not None for s in scales], dtype=bool)
    idx, scales = idx[has], [s for s, h in zip(scales, has.tolist(), strict=True) if h]
    if not idx.size:
        return
    offset = np.array([s.offset for s in scales])
    scale = np.array([s.scale for s in scales])
    low = (np.array([s.low for s in scales]) - offset) / scale
    high = (np.array([s.high for s in scales]) - offset) / scale
    out["low"][idx] = np.minimum(out["low"][idx], low)
    out["high"][idx] = np.maximum(out["high"][idx], high)
    if "trusted_range" in out:
        trusted = out["trusted_range"].astype(bool)
        trusted[idx] = True
        out["trusted_range"] = trusted


def _repeat_runs(
    out: dict[str, np.ndarray], keys: list[str], known: np.ndarray, artifact: Artifact
) -> None:
    """A series the new artifact knows: the longest run of repeats seen so far, or the
    artifact's (its whole history) when that is longer: a checkpoint of a few days must not
    forget the weekend stop."""
    if "flat_longest_run" not in out:
        return
    runs = out["flat_longest_run"]
    for i in np.flatnonzero(known).tolist():
        trained = artifact.series_scales[keys[i]].repeat_run
        if trained is not None and (runs[i] == NO_RUN_YET or runs[i] < trained):
            runs[i] = trained


def _seasonal(out: dict[str, np.ndarray], keys: list[str], artifact: Artifact) -> None:
    """A series whose period changed (or is not recorded) starts its seasonal parts afresh:
    its ring's positions would mean other lags."""
    old = out.get("seasonal_period")
    new = np.array(
        [(s.period or 0) if (s := artifact.series_scales.get(k)) else -1 for k in keys],
        dtype=np.int64,
    )
    if old is None:
        stale = np.ones(len(keys), dtype=bool)
    else:
        # -1: a series the new artifact does not know keeps the period it had (none).
        stale = (new >= 0) & (new != old.astype(np.int64))
    if not stale.any():
        return
    if "seasonal_count" in out:
        out["seasonal_count"][stale] = 0
        out["seasonal_ring"][stale] = 0.0
    for name, initial in _SEASONAL_INITIAL.items():
        if name in out:
            out[name][stale] = initial
    if old is not None:
        out["seasonal_period"] = np.where(stale, np.maximum(new, 0), old)


def _relations(
    out: dict[str, np.ndarray], keys: list[str], prefix: str, a: np.ndarray, b: np.ndarray
) -> None:
    """A device's mean and covariance rows, converted with each metric's factors."""
    names = [f"{prefix}_{k}" for k in ("pos", "mean", "cov")]
    if not all(n in out for n in names) or (np.all(a == 1.0) and np.all(b == 0.0)):
        return
    pos, mean, cov = (out[n] for n in names)
    factor: dict[tuple[str, int], float] = {}
    for i, key in enumerate(keys):
        if pos[i] >= 0:
            factor[(key.partition("/")[0], int(pos[i]))] = float(a[i])
    mean[:] = np.where(pos >= 0, mean * a + b, mean)
    for i, key in enumerate(keys):
        if pos[i] < 0:
            continue
        device = key.partition("/")[0]
        others = np.array(
            [factor.get((device, q), 1.0) for q in range(cov.shape[1])], dtype=np.float64
        )
        cov[i] = cov[i] * a[i] * others


def _errors_from_calibration(
    out: dict[str, np.ndarray], keys: list[str], known: np.ndarray, artifact: Artifact
) -> None:
    idx = np.flatnonzero(known)
    if not idx.size:
        return
    stats = [artifact.errors_for(keys[i]) for i in idx.tolist()]
    absolute = np.array([expected_abs(s) for s in stats]).reshape(-1, 2)
    out["err_mean"][idx] = [s.mean for s in stats]
    out["err_var"][idx] = np.maximum([s.std for s in stats], MIN_STD) ** 2
    out["error_run_mean"][idx] = absolute[:, 0]
    out["error_run_var"][idx] = absolute[:, 1] ** 2
    out["recent_error_ring"][idx] = 0.0
    out["recent_error_total"][idx] = 0.0
    out["recent_error_count"][idx] = 0


def _relay_windows(out: dict[str, np.ndarray], window_len: int) -> None:
    """Windows are stored oldest first with the newest reading last (`WindowStore.state`):
    keep the newest ``min(old, new)`` of each."""
    values, ts = out["values"], out["ts"]
    n, old = values.shape
    keep = min(old, window_len)
    new_values = np.zeros((n, window_len), dtype=values.dtype)
    new_ts = np.zeros((n, window_len), dtype=ts.dtype)
    if keep:
        new_values[:, window_len - keep :] = values[:, old - keep :]
        new_ts[:, window_len - keep :] = ts[:, old - keep :]
    out["values"], out["ts"] = new_values, new_ts
    out["count"] = np.minimum(out["count"], window_len).astype(out["count"].dtype)
