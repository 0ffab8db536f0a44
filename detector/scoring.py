"""Residual → normalised error → anomaly score, with per-series online error statistics.

Statistics live in *scaled* units (residual / series scale) so that the artifact's
calibration, measured on the validation split, seeds them directly: a series is scored from
its first ready reading, then its statistics follow it with an exponential forgetting.
"""

from __future__ import annotations

import numpy as np

from detector.artifact import ErrorStats

# A residual std of exactly zero (a perfectly forecast series) would make every later
# deviation infinitely anomalous; this floor is far below any real sensor's noise in
# scaled units.
MIN_STD = 1e-4


class ErrorTracker:
    """Exponentially weighted mean and variance of forecast residuals, one row per slot."""

    def __init__(self, capacity: int, halflife: float, clip: float) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / max(halflife, 1.0))
        self.clip = clip
        self.mean = np.zeros(capacity, dtype=np.float64)
        self.var = np.ones(capacity, dtype=np.float64)

    def ensure_capacity(self, capacity: int) -> None:
        if capacity > self.mean.shape[0]:
            grow = capacity - self.mean.shape[0]
            self.mean = np.concatenate([self.mean, np.zeros(grow)])
            self.var = np.concatenate([self.var, np.ones(grow)])

    def seed(self, slot: int, stats: ErrorStats) -> None:
        """Start slot `slot` from calibrated statistics (scaled units)."""
        self.mean[slot] = stats.mean
        self.var[slot] = max(stats.std, MIN_STD) ** 2

    def std(self, slots: np.ndarray) -> np.ndarray:
        return np.maximum(np.sqrt(self.var[slots]), MIN_STD)

    def score(self, slots: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """Normalised error |r - mean| / std of each residual against its slot's statistics."""
        return np.abs(residuals - self.mean[slots]) / self.std(slots)

    def update(self, slots: np.ndarray, residuals: np.ndarray) -> None:
        """Fold one residual per slot (slots distinct) into the statistics.

        Residuals are clipped to `clip` standard deviations first, so one wild reading (the
        anomaly itself) cannot blow the statistics up and hide the readings after it.
        """
        mean = self.mean[slots]
        std = self.std(slots)
        r = np.clip(residuals, mean - self.clip * std, mean + self.clip * std)
        diff = r - mean
        incr = self.alpha * diff
        self.mean[slots] = mean + incr
        self.var[slots] = (1.0 - self.alpha) * (self.var[slots] + diff * incr)
