"""Silence: a series that stops reporting for `silence_after` of its typical intervals.

A series was silent between two of its readings when the gap exceeds its limit and the
core's clock (another reading's time) passed the limit in between; a series still silent
at the end of a batch fires when the clock passes its limit. The alert's time is when the
limit passed, so the events are the same however the readings were batched.
"""

from __future__ import annotations

import numpy as np

from detector.engine.alert_building import ruling, silence_event
from detector.engine.events import AlertEvent, BatchResult, Suppressed
from detector.engine.readings import Reading
from detector.engine.rule_policy import NOT_SUPPRESSED, SUPPRESS_REASONS, SeriesRules
from detector.engine.slot_state import Column, ColumnState
from detector.engine.windows import WindowStore

GAP_ALPHA = 0.1
"""Weight of the newest interval in a series' typical interval between readings."""


class SilenceWatch(ColumnState):
    """Per slot: the typical interval between readings (`gap`, NaN until learnt), whether
    the series is silent now, and whether a rule kept its silence alert back."""

    name = "silence"
    # Added after the first checkpoints: an older one restores without them.
    columns = (
        Column("gap", "gap", np.nan, optional=True),
        Column("silent", "silent", False, optional=True),
        Column("silent_suppressed", "silent_suppressed", False, optional=True),
    )

    def __init__(self, capacity: int, silence_after: float, default_threshold: float) -> None:
        self.silence_after = silence_after
        self.default_threshold = default_threshold
        self.gap = np.full(capacity, np.nan, dtype=np.float64)
        self.silent = np.zeros(capacity, dtype=bool)
        self.silent_suppressed = np.zeros(capacity, dtype=bool)
        self.checked = -np.inf  # the clock at the last sweep

    @property
    def on(self) -> bool:
        return self.silence_after > 0

    def learn_gap(self, store: WindowStore, slots: np.ndarray, ts: np.ndarray) -> None:
        """A series' typical interval between readings: an exponentially weighted mean,
        each new interval capped at 3 typical ones so a dropout does not teach the series
        that long gaps are normal. Call before the readings are pushed."""
        # From the order bound, not the newest ts: after a reading stamped in the future the
        # next genuine interval must not come out negative (nor silence wait for that future).
        gap = ts - store.order_bounds(slots)
        gap = np.where(gap > 0, gap, np.nan)  # no interval: learn nothing from it
        old = self.gap[slots]
        fresh = np.isfinite(gap) & ~np.isfinite(old)
        capped = np.minimum(gap, 3.0 * old)
        updated = np.where(fresh, gap, old + GAP_ALPHA * (capped - old))
        self.gap[slots] = np.where(np.isfinite(gap) | fresh, updated, old)

    def end_round(
        self,
        store: WindowStore,
        rules: SeriesRules,
        slots: np.ndarray,
        ts: np.ndarray,
        readings: list[Reading],
        idx: np.ndarray,
        clock_points: np.ndarray,
        result: BatchResult,
    ) -> None:
        """Silence ended by one round of readings (one per slot, before they are pushed):
        a silence that passed unseen between two readings fires and resolves at once.
        `ts` are the round's timestamps, ``readings[idx]`` its readings, `clock_points` the
        times the clock took."""
        # The order bound: the newest ts unless that was stamped in the future (`learn_gap`).
        prev = store.order_bounds(slots)
        limit = prev + self.silence_after * self.gap[slots]  # NaN gap: never
        # The first clock point past the limit, if any, must come before this reading.
        after = np.searchsorted(clock_points, limit, side="right")
        passed = after < clock_points.size
        nxt = clock_points[np.minimum(after, clock_points.size - 1)]
        gone = self.silent[slots] | (passed & (nxt < ts) & (limit < ts))
        for i in np.flatnonzero(gone).tolist():
            slot, r = int(slots[i]), readings[int(idx[i])]
            onset = float(prev[i])
            rule = ruling(rules, slot, self.default_threshold)
            if not self.silent[slot]:
                value = store.last_value_of(slot)
                firing = silence_event("firing", r.key, float(limit[i]), value, onset, rule)
                self._fires(rules, slot, firing, result)
            self.silent[slot] = False
            if self.silent_suppressed[slot]:  # its firing was kept back: so is the end
                self.silent_suppressed[slot] = False
                continue
            result.events.append(silence_event("resolved", r.key, r.ts, r.value, onset, rule))

    def sweep(
        self, store: WindowStore, rules: SeriesRules, clock: float, result: BatchResult
    ) -> None:
        """Series quiet for `silence_after` of their typical intervals fire ``silence``.

        One vectorised pass over the slot arrays, and only when the clock moved: a dict
        walk over 100,000 series per drain cost milliseconds on the worker's hot path.
        """
        if clock <= self.checked:
            return
        self.checked = clock
        cap = store.capacity
        # From the order bound, not the newest ts (see `learn_gap`): a reading stamped in the
        # future must not hold its series' silence off. A free slot has no readings (count 0).
        limit = store.order_bounds() + self.silence_after * self.gap[:cap]
        gone = np.flatnonzero(
            store.has_readings() & (clock > limit) & ~self.silent[:cap]
        )  # NaN gap: never
        for slot in gone.tolist():
            key = store.key(slot)
            if key is None:
                continue
            self.silent[slot] = True
            value, onset = store.last_value_of(slot), store.order_bound_of(slot)
            at = onset + self.silence_after * float(self.gap[slot])
            rule = ruling(rules, slot, self.default_threshold)
            self._fires(rules, slot, silence_event("firing", key, at, value, onset, rule), result)

    def open_onset(self, store: WindowStore, slot: int) -> float | None:
        """When the open, unsuppressed silence of `slot` began (None: there is none)."""
        if self.silent[slot] and not self.silent_suppressed[slot]:
            return store.order_bound_of(slot)
        return None

    def _fires(self, rules: SeriesRules, slot: int, event: AlertEvent, result: BatchResult) -> None:
        """A silence alert, unless a rule keeps it back at the time the silence began to
        count (a machine switched off for maintenance goes quiet)."""
        code = rules.suppression_at(slot, event.ts)
        self.silent_suppressed[slot] = code != NOT_SUPPRESSED
        if code == NOT_SUPPRESSED:
            result.events.append(event)
        else:
            result.suppressed.append(Suppressed(event, SUPPRESS_REASONS[code]))
