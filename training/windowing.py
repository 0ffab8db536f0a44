"""Per-series scaling, the time-ordered train/validation split, and sliding windows.

A window is the `window_len` readings *before* a target reading; the model forecasts the
target. Each series is split in time: its first ``floor(n * split)`` readings are the
training part, the rest the validation part. A window belongs to the part its *target* is
in, so every validation target of a series is later than all of its training targets (a
validation window may look back into training readings, as the worker's window would).

All series are concatenated into one flat array and a window is named by the flat position
of its target, so subsampling or pooling millions of windows never copies them up front.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.engine.features import fit_scale, model_input
from detector.engine.seasonality import estimate_period
from training.data import Series

PERIOD_SAMPLE = 20_000
"""Readings (the most recent) in which a series' period is looked for."""


def split_point(n: int, split: float) -> int:
    """Number of leading readings of an `n`-reading series that form its training part."""
    # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from losing a reading.
    return min(n, math.floor(n * split + 1e-9))


def min_readings(window_len: int, split: float) -> int:
    """Fewest readings a series needs for one training and one validation window."""
    n = window_len + 2
    while split_point(n, split) < window_len + 1 or split_point(n, split) >= n:
        n += 1
    return n


def target_indices(n: int, n_train: int, window_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (within a series) of the training and of the validation targets."""
    train = np.arange(window_len, n_train, dtype=np.int64)
    val = np.arange(max(window_len, n_train), n, dtype=np.int64)
    return train, val


@dataclass
class WindowSet:
    """Scaled series in one flat array, plus the target positions of each split."""

    window_len: int
    features: tuple[str, ...]
    keys: list[str]
    """Series used, in order; a series id indexes this list."""
    scales: dict[str, tuple[float, float]]
    """Series key -> (offset, scale), fit on that series' training part."""
    ranges: dict[str, tuple[float, float]]
    """Series key -> (lowest, highest) raw value of all its readings (both parts)."""
    periods: dict[str, int | None]
    """Series key -> readings per season found by autocorrelation (None: no clear one)."""
    values: np.ndarray
    """Scaled values of all series, concatenated (float32)."""
    ts: np.ndarray
    """Timestamps of `values` (float64 epoch seconds)."""
    series_id: np.ndarray
    """Series id of each flat position."""
    train_pos: np.ndarray
    val_pos: np.ndarray
    n_train_readings: dict[str, int] = field(default_factory=dict)
    repeat_runs: dict[str, int | None] = field(default_factory=dict)
    """Series key -> the longest run of readings equal to the one before (both parts; None
    for a series that never changed value)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Series too short to give a training window -> its number of readings."""

    def inputs(self, pos: np.ndarray) -> np.ndarray:
        """Model input ``(B, W, F)`` float32 of the windows ending before targets `pos`."""
        idx = np.asarray(pos)[:, np.newaxis] + np.arange(-self.window_len, 0)
        ts = self.ts[idx] if len(self.features) > 1 else None
        return model_input(self.values[idx], ts, self.features)

    def targets(self, pos: np.ndarray) -> np.ndarray:
        """Scaled target values ``(B,)`` float32."""
        return self.values[np.asarray(pos)]

    def last_values(self, pos: np.ndarray) -> np.ndarray:
        """The naive "repeat the last value" forecast of each window ``(B,)``."""
        return self.values[np.asarray(pos) - 1]


def longest_repeat_run(values: np.ndarray) -> int | None:
    """The most readings in a row equal to the one before; None when the series never
    changes value (it has no run to compare with: see `detector.engine.scoring`).

    >>> longest_repeat_run(np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0]))
    2
    >>> longest_repeat_run(np.array([5.0, 5.0])) is None
    True
    """
    same = values[1:] == values[:-1]
    if same.all():
        return None
    edges = np.flatnonzero(np.diff(np.concatenate([[0], same.astype(np.int8), [0]])))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def build_windows(
    series: Series,
    window_len: int,
    split: float,
    method: str,
    features: Sequence[str] = ("value",),
    fixed_scales: Mapping[str, tuple[float, float]] | None = None,
) -> WindowSet:
    """Scale each series on its training part and index its training/validation windows.

    A series in `fixed_scales` keeps the (offset, scale) given there instead (a continued
    model keeps its parent's normalisation, see `training.continuation`).

    A series with too few readings for one training window is left out and listed in
    `WindowSet.skipped`; the caller decides whether what is left is enough.
    """
    if window_len < 1:
        raise ValueError("window_len must be at least 1")
    if not 0.0 < split < 1.0:
        raise ValueError("split must be between 0 and 1 (exclusive)")
    keys: list[str] = []
    scales: dict[str, tuple[float, float]] = {}
    ranges: dict[str, tuple[float, float]] = {}
    repeat_runs: dict[str, int | None] = {}
    periods: dict[str, int | None] = {}
    n_train_readings: dict[str, int] = {}
    skipped: dict[str, int] = {}
    values_parts: list[np.ndarray] = []
    ts_parts: list[np.ndarray] = []
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    start = 0
    for key in sorted(series):
        ts, values = series[key]
        n = int(values.size)
        n_train = split_point(n, split)
        if n_train < window_len + 1:
            skipped[key] = n
            continue
        if fixed_scales is not None and key in fixed_scales:
            offset, scale = fixed_scales[key]
        else:
            offset, scale = fit_scale(values[:n_train], method)
        sid = len(keys)
        keys.append(key)
        scales[key] = (offset, scale)
        ranges[key] = (float(values.min()), float(values.max()))
        repeat_runs[key] = longest_repeat_run(values)
        # The most recent readings suffice to find a period and bound the cost on long series.
        periods[key] = estimate_period(values[-PERIOD_SAMPLE:])
        n_train_readings[key] = n_train
        values_parts.append(((values - offset) / scale).astype(np.float32))
        ts_parts.append(np.asarray(ts, dtype=np.float64))
        train, val = target_indices(n, n_train, window_len)
        train_parts.append(train + start)
        val_parts.append(val + start)
        ids.append(np.full(n, sid, dtype=np.int32))
        start += n

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    return WindowSet(
        window_len=window_len,
        features=tuple(features),
        keys=keys,
        scales=scales,
        ranges=ranges,
        repeat_runs=repeat_runs,
        periods=periods,
        values=cat(values_parts, np.float32),
        ts=cat(ts_parts, np.float64),
        series_id=cat(ids, np.int32),
        train_pos=cat(train_parts, np.int64),
        val_pos=cat(val_parts, np.int64),
        n_train_readings=n_train_readings,
        skipped=skipped,
    )


def subsample(pos: np.ndarray, max_windows: int | None, seed: int) -> np.ndarray:
    """At most `max_windows` of `pos`, drawn without replacement (seeded), in time order."""
    if max_windows is None or pos.size <= max_windows:
        return pos
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pos, size=max_windows, replace=False))
