"""Residual → anomaly score in [0, 1], with per-series online statistics in numpy arrays.

The signals (`detector.engine.signals` says what each asks), each a question an operator
would ask, are combined by taking the largest.

Tail probabilities p become scores as ``log(1 - p + 1e-10) / log(1e-10)`` in [0, 1]: 0.5 means
p = 0.99999, and the score approaches 1 as 1 - p falls below 1e-10. All statistics are in
*scaled* units (see `detector.engine.artifact.SeriesScale`), so the artifact's calibration
seeds them.

A series the model was not trained on has no calibrated statistics and no known range: for its
first `learn_readings` scored readings its statistics learn as running means (not the slow
exponential forgetting) and its score is held at 0, so a fresh series does not alert on the
very things it is still learning.

The per-slot statistics live in `detector.engine.running_stats` (with `ErrorTracker`, the signed
residual's mean and variance for the expected band shown to operators), the signals' names
and the pick of the strongest in `detector.engine.signals`; both are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.engine.artifact import ErrorStats
from detector.engine.relations import RELATION_HALFLIFE

# Moved out of this module, still imported from it by the engine, training and tests.
from detector.engine.running_stats import COUNTER_CAP as COUNTER_CAP
from detector.engine.running_stats import MIN_STD as MIN_STD
from detector.engine.running_stats import SCALED_LIMIT as SCALED_LIMIT
from detector.engine.running_stats import ErrorTracker as ErrorTracker
from detector.engine.running_stats import LongRun as LongRun
from detector.engine.running_stats import RecentMean as RecentMean
from detector.engine.running_stats import SeasonalErrorStats as SeasonalErrorStats
from detector.engine.running_stats import expected_abs as expected_abs
from detector.engine.running_stats import tail_score as tail_score
from detector.engine.running_stats import tail_z as tail_z
from detector.engine.scorer_parts import NO_RUN_YET as NO_RUN_YET  # part of this module's API
from detector.engine.scorer_parts import scorer_parts
from detector.engine.signals import CERTAIN as CERTAIN
from detector.engine.signals import LASTING as LASTING
from detector.engine.signals import SIGNALS as SIGNALS
from detector.engine.signals import SUSTAINED as SUSTAINED
from detector.engine.signals import StrongestSignal


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
        longest_repeat: int | None = None,
    ) -> None:
        """Start a reset slot (every part of `parts` reset) from calibration: error and
        value distributions in scaled units (its seasonal statistics start when it gets a
        period: `SeasonalErrorStats.attach`).

        `trained` says the series was in the training data: its statistics are trusted from
        the first reading. Otherwise it learns for `learn_readings` readings first.
        `longest_repeat` is the longest run of one value in its history (None: not known).
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
        if longest_repeat is not None:
            # A stopped machine's weekend of zeros is in the history: not news on Saturday.
            self.longest_repeat_count[slot] = longest_repeat

    def seed_missing_ranges(self, slots: np.ndarray, windows_scaled: np.ndarray) -> None:
        """Slots without a range yet (series the model was not trained on) take it from
        their first window (one row of `windows_scaled` per slot)."""
        for j in np.flatnonzero(~np.isfinite(self.low[slots])).tolist():
            self.seed_range(int(slots[j]), windows_scaled[j])

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

        After the call, `last_z`, `last_flag`, `last_signal` (and `last_parts`) describe the
        readings before learning (see `_record`). A score that is not a number (state that
        went bad) comes out as 1, never as 0.
        """
        values, residuals = _clipped(values), _clipped(residuals)
        seasonal_residuals = None if seasonal_residuals is None else _clipped(seasonal_residuals)
        relation_resid = None if relation_resid is None else _clipped(relation_resid)
        seen = self.seen_count[slots]
        learnt = seen >= self.config.learn_readings
        learning = ~(self.trusted_stats[slots] | learnt)
        related = np.isfinite(relation_z) if relation_z is not None else np.zeros(slots.shape, bool)
        alone = ~related
        error = np.abs(residuals)
        recent_error = self.recent_error.push(slots, error)
        pick = StrongestSignal(
            self.error_run.z(slots, recent_error), signal_scales, self.record_parts
        )
        recent_value = self.recent_value.push(slots, values)
        if self.config.use_level:
            level_z = np.abs(self.value_run.z(slots, recent_value))
            pick.take(1, np.where(alone, level_z, 0.0))
        self._relation_signals(pick, slots, related, relation_z, relation_resid, standardised)
        flag = self._outside_range(slots, values, learnt, alone)
        if seasonal_residuals is not None:
            pick.take(3, np.where(alone, self._seasonal(slots, seasonal_residuals), 0.0))
        if repeated is not None:
            flag |= self._repeat_signals(pick, slots, repeated, seen)
        score = self._record(pick, flag, learning, z_scale)
        self._learn(slots, error, values, seen, learning)
        # NaN compares false with the threshold: it would read as "normal", silently.
        return np.where(np.isnan(score), 1.0, score)

    def _relation_signals(
        self,
        pick: StrongestSignal,
        slots: np.ndarray,
        related: np.ndarray,
        relation_z: np.ndarray | None,
        relation_resid: np.ndarray | None,
        standardised: np.ndarray | None,
    ) -> None:
        """The relation signal, and of it the lasting and (device models) sustained ones."""
        if relation_z is not None:
            pick.take(2, np.where(related, np.abs(relation_z), 0.0))
        if relation_resid is None:
            return
        lasting = related & np.isfinite(relation_resid)
        if lasting.any():
            pick.take(LASTING, self._lasting_relation(slots, lasting, relation_resid, standardised))
        if standardised is not None:
            own = lasting & standardised
            if own.any():
                pick.take(SUSTAINED, self._sustained(slots, own, relation_resid))

    def _outside_range(
        self, slots: np.ndarray, values: np.ndarray, learnt: np.ndarray, alone: np.ndarray
    ) -> np.ndarray:
        """Which readings leave their series' range (plus `range_tolerance` of it), then
        widen the range; none without the range signal."""
        flag = np.zeros(slots.shape, dtype=bool)
        cfg = self.config
        if cfg.use_range:
            low, high = self.low[slots], self.high[slots]
            span = high - low
            margin = cfg.range_tolerance * span
            outside = (span > 0) & ((values > high + margin) | (values < low - margin))
            outside &= (self.trusted_range[slots] | learnt) & alone
            flag |= outside
            self.low[slots] = np.minimum(low, values)
            self.high[slots] = np.maximum(high, values)
        return flag

    def _repeat_signals(
        self, pick: StrongestSignal, slots: np.ndarray, repeated: np.ndarray, seen: np.ndarray
    ) -> np.ndarray:
        """The repeat signal and the flatline; returns the stuck series (they fire outright)."""
        stuck = self._stuck(slots, repeated)
        pick.take(4, self._repeats(slots, repeated, seen))
        pick.which[stuck] = 6
        return stuck

    def _record(
        self,
        pick: StrongestSignal,
        flag: np.ndarray,
        learning: np.ndarray,
        z_scale: np.ndarray | float,
    ) -> np.ndarray:
        """Keep what threshold calibration needs, before learning, and return the scores.

        `last_z` holds each reading's largest likelihood deviation (divided by its signal's
        divisor, not by `z_scale`) and `last_flag` whether a certain signal (range,
        flatline) fired; with `record_parts`, `last_parts` holds each signal's deviation
        undivided.
        """
        which = pick.which
        which[flag & (which != 6)] = 5  # a flag that is not the flatline is the range
        self.last_z = np.where(learning, 0.0, pick.z)
        if pick.parts is not None:
            self.last_parts = np.where(learning[:, None], 0.0, pick.parts)
        self.last_flag = flag & ~learning
        self.last_signal = which
        score: np.ndarray = np.where(self.last_flag, 1.0, tail_score(self.last_z / z_scale))
        return score

    def _learn(
        self,
        slots: np.ndarray,
        error: np.ndarray,
        values: np.ndarray,
        seen: np.ndarray,
        learning: np.ndarray,
    ) -> None:
        """Fold the readings into the error and level statistics and count them."""
        # A learnt slot counts as having seen infinitely many: plain exponential forgetting.
        fast = np.where(learning, seen, np.inf)
        self.error_run.update(slots, error, fast)
        self.value_run.update(slots, values, fast)
        self.seen_count[slots] = np.minimum(seen, COUNTER_CAP) + 1

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


def _clipped(x: np.ndarray) -> np.ndarray:
    """`x` clipped to ±`SCALED_LIMIT`; NaN (no seasonal forecast, no relation) stays NaN."""
    clipped: np.ndarray = np.clip(x, -SCALED_LIMIT, SCALED_LIMIT)
    return clipped
