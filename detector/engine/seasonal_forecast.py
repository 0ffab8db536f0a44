"""The seasonal-naive forecast's per-series state: its rings of past values and the
statistics of its errors, which come and go together with a series' period."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from detector.engine.scoring import SeasonalErrorStats
from detector.engine.seasonality import PeriodRings

RING_STATE = ("seasonal_ring", "seasonal_count")
"""Snapshot names of the rings (the period each was kept for is ``seasonal_period``)."""


class SeasonalForecast:
    """A `detector.engine.slot_state.SlotState`: each slot's ring of the values one period ago and
    its row of seasonal error statistics (held by the scorer, which scores them)."""

    name = "seasonal"
    version = 1
    required = (*SeasonalErrorStats.STATE, *RING_STATE)

    def __init__(self, error_stats: SeasonalErrorStats) -> None:
        self.rings = PeriodRings()
        self.error_stats = error_stats

    def set_period(self, slot: int, period: int | None) -> None:
        """Give `slot` a fresh ring and error row for `period` (None or 0: drop both)."""
        self.rings.set_period(slot, period)
        if period:
            self.error_stats.attach(slot)
        else:
            self.error_stats.detach(slot)

    def forecast_and_push(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        return self.rings.forecast_and_push(slots, values)

    def carry_over(
        self,
        slots: np.ndarray,
        periods: np.ndarray,
        gain: np.ndarray,
        shift: np.ndarray,
        state: Mapping[str, np.ndarray],
    ) -> None:
        """Carry `slots` over to another model in place (a hot swap): a ring whose period
        stays is converted to the new scale (``gain * x + shift``, one pair per slot),
        another period (`periods`, 0: none) starts afresh; the error statistics are loaded
        from `state`, a snapshot already carried over."""
        rings = self.rings.rings
        for i, slot in enumerate(slots.tolist()):
            ring = rings.get(slot)
            if periods[i] != (0 if ring is None else ring.size):
                self.set_period(slot, int(periods[i]) or None)
            elif ring is not None:
                ring *= gain[i]
                ring += shift[i]
        self.error_stats.restore(slots, state)

    # -- SlotState -------------------------------------------------------------------------

    def grow(self, capacity: int) -> None:
        self.error_stats.ensure_capacity(capacity)

    def reset(self, slot: int) -> None:
        self.set_period(slot, None)  # the ring is freed, not kept until the slot's reuse

    def snapshot(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        state = self.error_stats.state(slots)
        rings = [self.rings.rings.get(slot) for slot in slots.tolist()]
        width = max((r.size for r in rings if r is not None), default=0)
        state["seasonal_ring"] = np.zeros((len(rings), width))
        state["seasonal_count"] = np.zeros(len(rings), dtype=np.int64)
        # The period each ring was kept for: a model with another period starts it afresh.
        state["seasonal_period"] = np.zeros(len(rings), dtype=np.int64)
        for i, (slot, ring) in enumerate(zip(slots.tolist(), rings, strict=True)):
            if ring is not None:
                state["seasonal_ring"][i, : ring.size] = ring
                state["seasonal_count"][i] = self.rings.count[slot]
                state["seasonal_period"][i] = ring.size
        return state

    def restore(self, slots: np.ndarray, state: Mapping[str, np.ndarray]) -> None:
        listed = slots.tolist()
        if "seasonal_period" in state:
            # A period the artifact does not give (a series a new model was not trained on)
            # is kept: its seasonal forecast is still the value one period ago.
            for slot, period in zip(listed, state["seasonal_period"].tolist(), strict=False):
                if period and slot not in self.rings.rings:
                    self.set_period(slot, int(period))
        self.error_stats.restore(slots, state)
        for i, slot in enumerate(listed):
            ring = self.rings.rings.get(slot)
            if ring is not None and state["seasonal_ring"].shape[1] >= ring.size:
                ring[:] = state["seasonal_ring"][i, : ring.size]
                self.rings.count[slot] = int(state["seasonal_count"][i])

    def nbytes(self) -> int:
        stats = self.error_stats
        columns = (stats.row, stats.recent.ring, stats.recent.total, stats.recent.count)
        runs = (stats.error_run.mean, stats.error_run.var, stats.seen_count)
        rings = sum(r.nbytes for r in self.rings.rings.values())
        return rings + sum(a.nbytes for a in (*columns, *runs))
