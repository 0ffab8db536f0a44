"""Residual → anomaly score in [0, 1], with per-series online statistics in numpy arrays.

Four signals (and a seasonal error, see `detector.engine.seasonality`), each a question an
operator would ask, combined by taking the largest:

* **Forecast error likelihood** — is the recent forecast error (mean |residual| over the last
  `short_window` readings) unusually large against this series' own long-run error
  distribution? A tail probability, like Numenta's anomaly likelihood; the long-run
  distribution is an exponentially weighted mean and variance, so memory per series is fixed.
* **Level likelihood** — is the recent level (mean of the last `short_window` values) unusual
  against the series' long-run value distribution? Catches shifts the forecaster follows
  too quickly to leave a large error.
* **Range** — is the value outside everything seen so far (plus `range_tolerance` of the
  range)? A sensor that leaves its physical envelope is news even when the forecaster
  would have followed it.
* **Flatline** — has the series repeated exactly the same value for longer than it ever did
  before (and for at least `flatline_min` readings)? A stuck sensor or a feed that stopped
  updating keeps a plausible value, so neither the forecast nor the range sees it. Only a
  series that has changed value at least once can be stuck: one that never changed has no
  run to compare with.

Tail probabilities p become scores as ``log(1 - p + 1e-10) / log(1e-10)`` in [0, 1]: 0.5 means
p = 0.99999, and the score approaches 1 as 1 - p falls below 1e-10. All statistics are in
*scaled* units (see `detector.engine.artifact.SeriesScale`), so the artifact's calibration
seeds them.

A series the model was not trained on has no calibrated statistics and no known range: for its
first `learn_readings` scored readings its statistics learn as running means (not the slow
exponential forgetting) and its score is held at 0, so a fresh series does not alert on the
very things it is still learning.

`ErrorTracker` keeps the signed residual's mean and variance for the expected band shown to
operators (``expected ± band_sigmas · std``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from detector.engine.artifact import ErrorStats
from detector.engine.relations import RELATION_HALFLIFE
from detector.engine.scorer_parts import NO_RUN_YET as NO_RUN_YET  # part of this module's API
from detector.engine.scorer_parts import scorer_parts
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


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """Parameters of `AnomalyScorer`: built by `DetectionConfig.scoring()`
    (`detector.engine.detection_config`), which holds their defaults and documentation (one place,
    the worker's settings)."""

    likelihood_halflife: float
    level_halflife: float
    short_window: int
    range_tolerance: float
    use_level: bool
    use_range: bool
    learn_readings: int
    flatline_min: int = 0
    relation_halflife: float = RELATION_HALFLIFE
    sustained_window: int = 60


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


SIGNALS = (
    "forecast",
    "level",
    "relation",
    "seasonal",
    "repeat",
    "range",
    "flatline",
    "lasting",
    "sustained",
)
"""Names of the signals, in the order `AnomalyScorer.last_signal` indexes them. ``relation``
is a reading's deviation from what its device's other sensors imply, ``lasting`` the recent
mean of that deviation (a relation that stays broken), ``sustained`` a device model's
deviations averaged over `sustained_window` readings and judged by their law under the model
(a sensor creeping away from what its machine implies)."""
LASTING = SIGNALS.index("lasting")
SUSTAINED = SIGNALS.index("sustained")
CERTAIN = (SIGNALS.index("range"), SIGNALS.index("flatline"))
"""Signals that fire outright (score 1): no divisor applies to them."""


class AnomalyScorer:
    """Per-slot state of the signals; `score` scores one reading per slot and learns it."""

    def __init__(self, capacity: int, config: ScoringConfig) -> None:
        self.config = config
        self.recent_error = RecentMean(capacity, config.short_window)
        self.recent_value = RecentMean(capacity, config.short_window)
        self.seasonal_error_stats = SeasonalErrorStats(
            capacity, config.short_window, config.likelihood_halflife
        )
        self.error_run = LongRun(capacity, config.likelihood_halflife)
        self.value_run = LongRun(capacity, config.level_halflife)
        # The recent mean of the deviation from what a device's other sensors imply, against
        # its long run: a relation that stays broken (a drift, a step) stands out of
        # transients (a sensor lagging its machine at a start-up) that one reading cannot.
        self.recent_relation = RecentMean(capacity, config.short_window)
        self.relation_run = LongRun(capacity, config.relation_halflife)
        self.relation_seen_count = np.zeros(capacity, dtype=np.int32)
        # A device model's deviations (unit normal under the model), exponentially weighted
        # over `sustained_window` readings: one float per series, where a ring would be 60.
        self.sustained = np.zeros(capacity)
        self._sustained_alpha = 2.0 / (max(config.sustained_window, 1) + 1.0)
        self.low = np.full(capacity, np.inf)
        self.high = np.full(capacity, -np.inf)
        self.seen_count = np.zeros(capacity, dtype=np.int32)
        self.trusted_stats = np.zeros(capacity, dtype=bool)
        self.trusted_range = np.zeros(capacity, dtype=bool)
        # Flatline: repeats of the previous value in a row now, and the longest such run that
        # ended so far (NO_RUN_YET until the value first changes).
        self.repeat_count = np.zeros(capacity, dtype=np.int32)
        self.longest_repeat_count = np.full(capacity, NO_RUN_YET, dtype=np.int32)
        # How often the series repeats its previous value exactly (a long-run rate).
        self.repeat_rate = np.zeros(capacity, dtype=np.float64)
        self._repeat_alpha = 1.0 - 0.5 ** (1.0 / max(config.level_halflife, 1.0))
        self.last_z: np.ndarray = np.zeros(0)
        self.last_flag: np.ndarray = np.zeros(0, dtype=bool)
        self.last_signal: np.ndarray = np.zeros(0, dtype=np.int8)
        self.record_parts = False
        """When set, `last_parts` keeps every signal's deviation of the last call (alert
        calibration needs them one by one)."""
        self.last_parts: np.ndarray = np.zeros((0, len(SIGNALS)))
        self.parts = scorer_parts(self)
        """The per-slot state, one part per signal (`detector.engine.slot_state`)."""

    def ensure_capacity(self, capacity: int) -> None:
        for part in self.parts:
            part.grow(capacity)
        self.seasonal_error_stats.ensure_capacity(capacity)

    def seed(
        self,
        slot: int,
        errors: ErrorStats,
        value_mean: float,
        value_std: float,
        value_range: tuple[float, float] | None,
        trained: bool = True,
    ) -> None:
        """Start a reset slot (every part of `parts` reset) from calibration: error and
        value distributions in scaled units (its seasonal statistics start when it gets a
        period: `SeasonalErrorStats.attach`).

        `trained` says the series was in the training data: its statistics are trusted from
        the first reading. Otherwise it learns for `learn_readings` readings first.
        """
        abs_mean, abs_std = expected_abs(errors)
        self.error_run.mean[slot], self.error_run.var[slot] = abs_mean, abs_std**2
        self.value_run.mean[slot] = value_mean
        self.value_run.var[slot] = max(value_std, MIN_STD) ** 2
        if value_range:
            self.low[slot], self.high[slot] = value_range
        self.trusted_stats[slot] = trained
        # A series without a recorded range (new, or an older artifact) learns it first.
        self.trusted_range[slot] = value_range is not None

    def seed_range(self, slot: int, window_scaled: np.ndarray) -> None:
        """Range of a series the model was not trained on: its first window."""
        self.low[slot] = min(self.low[slot], float(window_scaled.min()))
        self.high[slot] = max(self.high[slot], float(window_scaled.max()))

    def score(
        self,
        slots: np.ndarray,
        values: np.ndarray,
        residuals: np.ndarray,
        seasonal_residuals: np.ndarray | None = None,
        repeated: np.ndarray | None = None,
        relation_z: np.ndarray | None = None,
        z_scale: np.ndarray | float = 1.0,
        relation_resid: np.ndarray | None = None,
        signal_scales: np.ndarray | None = None,
        standardised: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores in [0, 1] of one reading per distinct slot, then learn from it.

        `values` and `residuals` are in scaled units; `seasonal_residuals` are the errors of
        the seasonal-naive forecast (NaN for slots without one); `repeated` says which
        readings equal their series' previous reading exactly (None: no flatline signal).
        `relation_z` is the reading's deviation from what its device's other sensors imply
        (NaN where there is none, see `detector.engine.relations`): where it is given, it replaces
        the series' own level, range and seasonal signals, which a machine's normal changes
        of state would set off. The likelihood deviations are divided by `z_scale` (the
        alerting calibration, see `training.alerting`) before they become scores, each
        signal's first by its own divisor in `signal_scales` (indexed like `SIGNALS`; None:
        all 1). `standardised` marks readings whose `relation_resid` is already a deviation
        in units of its own predicted spread (a device model's z): their lasting signal is
        the recent mean of it against its law under that model, not against a learnt long run.

        After the call, `last_z` holds each reading's largest likelihood deviation (divided
        by its signal's divisor, not by `z_scale`) and `last_flag` whether a certain signal
        (range, flatline) fired, before learning: what threshold calibration needs; with
        `record_parts`, `last_parts` holds each signal's deviation undivided.

        A score that is not a number (state that went bad) comes out as 1, never as 0.
        """
        values = np.clip(values, -SCALED_LIMIT, SCALED_LIMIT)
        residuals = np.clip(residuals, -SCALED_LIMIT, SCALED_LIMIT)
        if seasonal_residuals is not None:  # NaN (no seasonal forecast) stays NaN
            seasonal_residuals = np.clip(seasonal_residuals, -SCALED_LIMIT, SCALED_LIMIT)
        if relation_resid is not None:  # NaN (no relation) stays NaN
            relation_resid = np.clip(relation_resid, -SCALED_LIMIT, SCALED_LIMIT)
        cfg = self.config
        seen = self.seen_count[slots]
        learnt = seen >= cfg.learn_readings
        learning = ~(self.trusted_stats[slots] | learnt)
        related = np.isfinite(relation_z) if relation_z is not None else np.zeros(slots.shape, bool)
        alone = ~related
        error = np.abs(residuals)
        recent_error = self.recent_error.push(slots, error)
        z = self.error_run.z(slots, recent_error)
        parts = np.zeros((len(slots), len(SIGNALS))) if self.record_parts else None
        if parts is not None:
            parts[:, 0] = z
        if signal_scales is not None:
            z = z / signal_scales[0]
        which = np.zeros(slots.shape, dtype=np.int8)  # index into SIGNALS

        def take(k: int, candidate: np.ndarray) -> None:
            nonlocal z
            if parts is not None:
                parts[:, k] = np.maximum(parts[:, k], candidate)
            if signal_scales is not None:
                candidate = candidate / signal_scales[k]
            which[candidate > z] = k
            z = np.maximum(z, candidate)

        recent_value = self.recent_value.push(slots, values)
        if cfg.use_level:
            level_z = np.abs(self.value_run.z(slots, recent_value))
            take(1, np.where(alone, level_z, 0.0))
        if relation_z is not None:
            take(2, np.where(related, np.abs(relation_z), 0.0))
        if relation_resid is not None:
            lasting = related & np.isfinite(relation_resid)
            if lasting.any():
                take(LASTING, self._lasting_relation(slots, lasting, relation_resid, standardised))
            if standardised is not None:
                own = lasting & standardised
                if own.any():
                    take(SUSTAINED, self._sustained(slots, own, relation_resid))
        flag = np.zeros(slots.shape, dtype=bool)
        if cfg.use_range:
            low, high = self.low[slots], self.high[slots]
            span = high - low
            margin = cfg.range_tolerance * span
            outside = (span > 0) & ((values > high + margin) | (values < low - margin))
            outside &= (self.trusted_range[slots] | learnt) & alone
            flag |= outside
            self.low[slots] = np.minimum(low, values)
            self.high[slots] = np.maximum(high, values)
        if seasonal_residuals is not None:
            take(3, np.where(alone, self._seasonal(slots, seasonal_residuals), 0.0))
        if repeated is not None:
            stuck = self._stuck(slots, repeated)
            take(4, self._repeats(slots, repeated, seen))
            which[stuck] = 6
            flag |= stuck
        which[flag & (which != 6)] = 5  # a flag that is not the flatline is the range
        self.last_z = np.where(learning, 0.0, z)
        if parts is not None:
            self.last_parts = np.where(learning[:, None], 0.0, parts)
        self.last_flag = flag & ~learning
        self.last_signal = which
        score = np.where(self.last_flag, 1.0, tail_score(self.last_z / z_scale))
        # A learnt slot counts as having seen infinitely many: plain exponential forgetting.
        fast = np.where(learning, seen, np.inf)
        self.error_run.update(slots, error, fast)
        self.value_run.update(slots, values, fast)
        self.seen_count[slots] = np.minimum(seen, COUNTER_CAP) + 1
        # NaN compares false with the threshold: it would read as "normal", silently.
        return np.where(np.isnan(score), 1.0, score)

    def _stuck(self, slots: np.ndarray, repeated: np.ndarray) -> np.ndarray:
        """Which series have now repeated one value longer than ever before (and at least
        `flatline_min` times); then count the run or close it."""
        before = self.repeat_count[slots]
        count = np.where(repeated, np.minimum(before, COUNTER_CAP) + 1, 0).astype(np.int32)
        longest = self.longest_repeat_count[slots]
        # A run that just ended is a completed run; the first change of a series makes it
        # the first one (NO_RUN_YET is above any run, hence the explicit case).
        closed = np.where(longest == NO_RUN_YET, before, np.maximum(longest, before))
        self.longest_repeat_count[slots] = np.where(repeated, longest, closed)
        self.repeat_count[slots] = count
        minimum = self.config.flatline_min
        if minimum <= 0:
            return np.zeros(slots.shape, dtype=bool)
        stuck: np.ndarray = (
            repeated & (longest != NO_RUN_YET) & (count > longest) & (count >= minimum)
        )
        return stuck

    def _lasting_relation(
        self,
        slots: np.ndarray,
        related: np.ndarray,
        resid: np.ndarray,
        standardised: np.ndarray | None = None,
    ) -> np.ndarray:
        """|z| of the recent mean of the signed relation residual against its long run (0
        while a series has fewer than `learn_readings` related readings), then learn.

        A standardised residual (unit spread under the model that made it) needs no learnt
        long run: the mean of n of them has spread 1/sqrt(n). A learnt one was fragile here:
        its spread settles on the first `learn_readings` readings and then moves with a
        half-life of weeks, so a core primed at night judged every morning's start-up
        against the calm of a stopped machine.
        """
        out = np.zeros(slots.shape)
        r = np.flatnonzero(related)
        s = slots[r]
        recent = self.recent_relation.push(s, resid[r])
        seen = self.relation_seen_count[s]
        learnt = seen >= self.config.learn_readings
        lasting = np.abs(self.relation_run.z(s, recent))
        if standardised is not None:
            own = standardised[r]
            root_n = float(np.sqrt(self.config.short_window))
            lasting = np.where(own, np.abs(recent) * root_n, lasting)
        out[r] = np.where(learnt, lasting, 0.0)
        self.relation_run.update(s, recent, np.where(learnt, np.inf, seen))
        self.relation_seen_count[s] = np.minimum(seen, COUNTER_CAP) + 1
        return out

    def _sustained(self, slots: np.ndarray, own: np.ndarray, z: np.ndarray) -> np.ndarray:
        """|weighted mean| of the `own` readings' device-model deviations against its law
        under the model, then learn: a mean with weight a of independent unit normals has
        variance a / (2 - a). No long run is learnt (see `_lasting_relation`); at a start-up
        the model is uncertain and says so in its sigma, and calibration sets the divisor.
        """
        out = np.zeros(slots.shape)
        r = np.flatnonzero(own)
        s = slots[r]
        a = self._sustained_alpha
        mean = self.sustained[s] + a * (z[r] - self.sustained[s])
        self.sustained[s] = mean
        out[r] = np.abs(mean) / np.sqrt(a / (2.0 - a))
        return out

    def _repeats(self, slots: np.ndarray, repeated: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Deviation (z) of the current run of exact repeats, then learn the repeat rate.

        A sensor that repeats its previous value with long-run rate q repeats it k times in a
        row with probability about q**k: a noisy sensor (q near 0) that stops changing is
        news after a few readings, a counter that often sits still only after many. The rate
        is floored at what the series' history can resolve (its learning weight), so a
        series that never repeated is not infinitely surprised. Call after `_stuck` (which
        counts the run).
        """
        alpha = np.maximum(self._repeat_alpha, 1.0 / (seen + 1.0))
        rate = self.repeat_rate[slots]
        floor = np.maximum(rate, np.maximum(self._repeat_alpha, 1.0 / (seen + 2.0)))
        count = self.repeat_count[slots]
        longest = self.longest_repeat_count[slots]
        # Only a run longer than any the series completed before (as for the flatline
        # signal): counts that sit still for a while every night are not stuck.
        news = (count > 0) & (longest != NO_RUN_YET) & (count > longest)
        log_p = count.astype(np.float64) * np.log(np.minimum(floor, 1.0))
        z = np.where(news, tail_z(log_p), 0.0)
        self.repeat_rate[slots] = rate + alpha * (repeated - rate)
        return z

    def _seasonal(self, slots: np.ndarray, seasonal_residuals: np.ndarray) -> np.ndarray:
        """Deviation (z) of the recent seasonal-naive error; 0 while it is learning.

        It has no calibration to start from, so each series learns it for `learn_readings`
        readings (as running means) before it may score.
        """
        out = np.zeros(slots.shape)
        have = np.flatnonzero(np.isfinite(seasonal_residuals))
        if have.size:
            out[have] = self.seasonal_error_stats.score(
                slots[have], np.abs(seasonal_residuals[have]), self.config.learn_readings
            )
        return out
