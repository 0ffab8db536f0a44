"""The scorer's per-slot running statistics, in numpy arrays, and the tail scores they feed.

`RecentMean` (the mean of a series' last readings), `LongRun` (an exponentially weighted mean
and variance), `SeasonalErrorStats` (both, for the series that have a period) and
`ErrorTracker` (the signed residual's mean and variance, for the expected band shown to
operators: ``expected ± band_sigmas · std``). `AnomalyScorer` (`detector.engine.scoring`)
combines them into its signals.

Tail probabilities p become scores as ``log(1 - p + 1e-10) / log(1e-10)`` in [0, 1]: 0.5 means
p = 0.99999, and the score approaches 1 as 1 - p falls below 1e-10 (`tail_score`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from detector.engine.artifact import ErrorStats
from detector.engine.slot_arrays import grown
from detector.engine.slot_state import Column, ColumnState

# A residual std of exactly zero (a perfectly forecast series) would make every later
# deviation infinitely anomalous; this floor is far below any real sensor's noise in
# scaled units.
MIN_STD = 1e-4
_LOG_FLOOR = math.log(1e-10)
_SQRT2 = math.sqrt(2.0)
COUNTER_CAP = 2**30
"""Per-slot counters are int32 and saturate here: a 100 Hz sensor passes 2**31 readings in
248 days, and a wrapped counter would put its series back to "learning" (scored 0)."""
_erfc = np.vectorize(math.erfc, otypes=[np.float64])
SCALED_LIMIT = 1e15
"""Scaled values and residuals enter the statistics clipped to ±this: far beyond any real
deviation (a score saturates long before), and every square and sum of them stays finite,
float32 rings included (a 1e308 once made a series' statistics inf, then NaN, for good)."""


def tail_score(z: np.ndarray) -> np.ndarray:
    """Score in [0, 1] of standardised deviations `z` (one-sided, upper tail).

    ``log(1 - p + 1e-10) / log(1e-10)`` where p is the normal CDF of z: z <= 0 scores 0,
    z = 4.26 scores 0.5, z = 7 scores 0.9994, NaN scores 1.
    """
    z = np.asarray(z, dtype=np.float64)
    out = np.zeros(z.shape)
    pos = z > 0
    if pos.any():
        tail = 0.5 * _erfc(z[pos] / _SQRT2)  # 1 - p, accurate far into the tail
        out[pos] = np.log(np.maximum(tail, 1e-300) + 1e-10) / _LOG_FLOOR
    # A z that is not a number (statistics gone bad) scores 1: never silently "normal".
    return np.where(np.isnan(z), 1.0, np.clip(out, 0.0, 1.0))


def tail_z(log_p: np.ndarray) -> np.ndarray:
    """The standardised deviation z whose upper normal tail is exp(`log_p`), for small tails
    (asymptotic inverse, within 0.03 of the exact z from p = 1e-3 on); 0 for p above ~0.1."""
    t = -2.0 * np.minimum(np.asarray(log_p, dtype=np.float64), -1e-300)
    inner = t - np.log(t) - math.log(2.0 * math.pi)
    return np.sqrt(np.maximum(inner, 0.0))


def expected_abs(stats: ErrorStats) -> tuple[float, float]:
    """Mean and std of |residual| from calibration (normal approximation when not stored)."""
    if stats.abs_mean is not None and stats.abs_std is not None:
        return stats.abs_mean, max(stats.abs_std, MIN_STD)
    sigma = max(stats.std, MIN_STD)
    return sigma * math.sqrt(2.0 / math.pi), sigma * math.sqrt(1.0 - 2.0 / math.pi)


class ErrorTracker(ColumnState):
    """Exponentially weighted mean and variance of signed residuals, one row per slot."""

    name = "errors"
    columns = (Column("err_mean", "mean", 0.0), Column("err_var", "var", 1.0))

    def __init__(self, capacity: int, halflife: float, clip: float) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / max(halflife, 1.0))
        self.clip = clip
        self.mean = np.zeros(capacity, dtype=np.float64)
        self.var = np.ones(capacity, dtype=np.float64)

    def ensure_capacity(self, capacity: int) -> None:
        self.grow(capacity)

    def seed(self, slot: int, stats: ErrorStats) -> None:
        """Start slot `slot` from calibrated statistics (scaled units)."""
        self.mean[slot] = stats.mean
        self.var[slot] = max(stats.std, MIN_STD) ** 2

    def std(self, slots: np.ndarray) -> np.ndarray:
        std: np.ndarray = np.maximum(np.sqrt(self.var[slots]), MIN_STD)
        return std

    def band(self, slots: np.ndarray, sigmas: float) -> tuple[np.ndarray, np.ndarray]:
        """Where residuals are expected, per slot: ``mean -/+ sigmas * std``."""
        mean, std = self.mean[slots], self.std(slots)
        return mean - sigmas * std, mean + sigmas * std

    def score(self, slots: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """Normalised error |r - mean| / std of each residual against its slot's statistics."""
        score: np.ndarray = np.abs(residuals - self.mean[slots]) / self.std(slots)
        return score

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


class RecentMean:
    """Mean of the last `length` observations of each slot (fewer while filling)."""

    def __init__(self, capacity: int, length: int) -> None:
        self.length = max(1, length)
        # float32: three rings of `length` values per slot were 30 MB of a 100,000-series
        # worker. Observations are rounded to float32 as they enter, in the ring and the
        # running total alike, so the total stays the exact sum of the ring (scores moved
        # by < 2e-7 relative on a replay, no decision changed).
        self.ring = np.zeros((capacity, self.length), dtype=np.float32)
        self.total = np.zeros(capacity, dtype=np.float64)
        # int32 counters (as elsewhere per slot): 2**31 readings is 68 years of one a second.
        self.count = np.zeros(capacity, dtype=np.int32)

    def ensure_capacity(self, capacity: int) -> None:
        self.ring = grown(self.ring, capacity, 0.0)
        self.total = grown(self.total, capacity, 0.0)
        self.count = grown(self.count, capacity, 0)

    def reset(self, slot: int) -> None:
        self.ring[slot] = 0.0
        self.total[slot] = 0.0
        self.count[slot] = 0

    def push(self, slots: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Add one observation per (distinct) slot; returns the new recent means."""
        pos = self.count[slots] % self.length
        old = self.ring[slots, pos]
        full = self.count[slots] >= self.length
        # Recomputed from the ring now and then would be exact; the running total drifts by
        # rounding only, far below anything a score can see.
        x = np.asarray(x, dtype=np.float32)
        self.total[slots] += x - np.where(full, old, 0.0)
        self.ring[slots, pos] = x
        # Past two lengths the count steps back by one: the position (count % length) and
        # "full" stay what they were, and the int32 count never wraps.
        count = self.count[slots] + 1
        count = np.where(count >= 2 * self.length, count - self.length, count)
        self.count[slots] = count
        mean: np.ndarray = self.total[slots] / np.minimum(count, self.length)
        return mean


class LongRun:
    """Exponentially weighted mean and variance of an observation, one row per slot."""

    def __init__(self, capacity: int, halflife: float) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / max(halflife, 1.0))
        self.mean = np.zeros(capacity, dtype=np.float64)
        self.var = np.ones(capacity, dtype=np.float64)

    def ensure_capacity(self, capacity: int) -> None:
        self.mean = grown(self.mean, capacity, 0.0)
        self.var = grown(self.var, capacity, 1.0)

    def z(self, slots: np.ndarray, x: np.ndarray) -> np.ndarray:
        z: np.ndarray = (x - self.mean[slots]) / np.maximum(np.sqrt(self.var[slots]), MIN_STD)
        return z

    def update(self, slots: np.ndarray, x: np.ndarray, seen: np.ndarray | None = None) -> None:
        """Fold `x` in; slots that have `seen` few observations learn as a running mean."""
        alpha = self.alpha if seen is None else np.maximum(self.alpha, 1.0 / (seen + 1.0))
        diff = x - self.mean[slots]
        incr = alpha * diff
        self.mean[slots] += incr
        self.var[slots] = (1.0 - alpha) * (self.var[slots] + diff * incr)


class SeasonalErrorStats:
    """The seasonal-naive error statistics, kept only for the series that have a period.

    Most series have none (their training data showed no clear period), so the recent and
    long-run error statistics live in compact rows that a periodic series takes when it gets
    its period and gives back when it loses its slot: 68 bytes per series that the others
    no longer pay (7 MB of a 100,000-series worker).
    """

    STATE = (
        "recent_seasonal_ring",
        "recent_seasonal_total",
        "recent_seasonal_count",
        "seasonal_run_mean",
        "seasonal_run_var",
        "seasonal_seen",
    )
    """Checkpoint names of the per-series state, as before rows were compact."""

    def __init__(self, capacity: int, short_window: int, halflife: float) -> None:
        self.row = np.full(capacity, -1, dtype=np.int32)  # -1: no period, no row
        self.recent = RecentMean(0, short_window)
        self.error_run = LongRun(0, halflife)
        self.seen_count = np.zeros(0, dtype=np.int32)
        self._free: list[int] = []
        self._used = 0

    def ensure_capacity(self, capacity: int) -> None:
        self.row = grown(self.row, capacity, -1)

    def attach(self, slot: int) -> None:
        """Give `slot` a fresh row (it has a period now)."""
        row = int(self.row[slot])
        if row < 0:
            if self._free:
                row = self._free.pop()
            else:
                row = self._used
                self._used += 1
                if row >= self.seen_count.shape[0]:
                    rows = max(64, row + row // 8)
                    self.recent.ensure_capacity(rows)
                    self.error_run.ensure_capacity(rows)
                    self.seen_count = grown(self.seen_count, rows, 0)
            self.row[slot] = row
        self.recent.reset(row)
        self.error_run.mean[row], self.error_run.var[row] = 0.0, 1.0
        self.seen_count[row] = 0

    def detach(self, slot: int) -> None:
        """`slot` has no period (any more): its row is free for another series."""
        row = int(self.row[slot])
        if row >= 0:
            self._free.append(row)
            self.row[slot] = -1

    def score(self, slots: np.ndarray, errors: np.ndarray, learn_readings: int) -> np.ndarray:
        """Standardised deviation (z) of the recent |seasonal error| of one reading per
        distinct slot (0 while a series learns, and for a slot without a row), then learn."""
        out = np.zeros(slots.shape)
        rows = self.row[slots]
        have = np.flatnonzero(rows >= 0)
        if not have.size:
            return out
        r = rows[have]
        error = errors[have]
        recent = self.recent.push(r, error)
        seen = self.seen_count[r]
        learnt = seen >= learn_readings
        out[have] = np.where(learnt, self.error_run.z(r, recent), 0.0)
        self.error_run.update(r, error, np.where(learnt, np.inf, seen))
        self.seen_count[r] = np.minimum(seen, COUNTER_CAP) + 1
        return out

    def _columns(self) -> tuple[np.ndarray, ...]:
        rc = self.recent
        er = self.error_run
        return (rc.ring, rc.total, rc.count, er.mean, er.var, self.seen_count)

    def state(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The state of `slots` as per-slot arrays (a slot without a row: its initial one)."""
        rows = self.row[slots]
        has = rows >= 0
        out: dict[str, np.ndarray] = {}
        initial = (0.0, 0.0, 0, 0.0, 1.0, 0)
        for name, column, fill in zip(self.STATE, self._columns(), initial, strict=True):
            array = np.full((len(slots), *column.shape[1:]), fill, dtype=column.dtype)
            array[has] = column[rows[has]]
            out[name] = array
        return out

    def restore(self, slots: np.ndarray, state: Mapping[str, np.ndarray]) -> None:
        """Load per-slot arrays of `state` (rows `: len(slots)`) into the slots' rows."""
        rows = self.row[slots]
        has = rows >= 0
        for name, column in zip(self.STATE, self._columns(), strict=True):
            if name in state:
                column[rows[has]] = state[name][: len(slots)][has]
