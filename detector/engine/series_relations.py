"""Which device model each series belongs to, and the device models themselves.

The core relates a series to its device's other sensors twice (`detector.engine.relations`): once
by value and once by forecast residual. Both models attach metrics in the same order, so a
series has one (device id, position) in each.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from detector.engine.relations import RELATION_HALFLIFE, DeviceRelations
from detector.engine.slot_arrays import grown

PREFIXES = ("rel", "rres")
"""Snapshot prefixes of the relations of values and of forecast residuals."""
_ROW_STATE = ("pos", "mean", "cov", "seen")


class SeriesRelations:
    """A `detector.engine.slot_state.SlotState`: per slot, its device id (`dev_row`, -1: none)
    and position (`dev_pos`, -1: not related) in the two device models (`models`: values,
    then forecast residuals)."""

    name = "relations"
    version = 1
    required: tuple[str, ...] = ()  # older checkpoints have none: devices learn afresh

    def __init__(self, capacity: int, clip: float, learn_readings: int) -> None:
        self.models = tuple(
            DeviceRelations(RELATION_HALFLIFE, clip, learn_readings) for _ in PREFIXES
        )
        self.dev_row = np.full(capacity, -1, dtype=np.int32)
        self.dev_pos = np.full(capacity, -1, dtype=np.int32)

    def attach(self, slot: int, key: str) -> None:
        """Relate series `key` (``device/metric``) at `slot` to its device's others."""
        device, _, metric = key.partition("/")
        for model in self.models:
            row, pos = model.attach(device, metric)
        self.dev_row[slot], self.dev_pos[slot] = row, pos

    def relate(
        self,
        slots: np.ndarray,
        ts: np.ndarray,
        scaled: np.ndarray,
        residual: np.ndarray,
        suspect: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The device view of one reading per slot: the forecast residual left once the
        device's other residuals at the same timestamp are accounted for, and the deviation
        of the value from what the other values imply (as z and as a residual); the
        residual as it was and NaN for readings without related sensors present.
        `suspect` marks series in an episode (left out of what their siblings are judged
        against)."""
        rows, pos = self.dev_row[slots], self.dev_pos[slots]
        levels, residuals = self.models
        relation_resid, relation_z = levels.observe(rows, pos, ts, scaled, suspect)
        left, _ = residuals.observe(rows, pos, ts, residual, suspect)
        return np.where(np.isfinite(left), left, residual), relation_z, relation_resid

    def rescale(self, slots: np.ndarray, gain: np.ndarray, shift: np.ndarray) -> None:
        """Convert each device's models to new scales of its series (a hot swap to another
        model): the values of the series at `slots` to ``gain * x + shift``, their forecast
        residuals to ``gain * x`` (a residual has no offset)."""
        rows, pos = self.dev_row[slots], self.dev_pos[slots]
        levels, residuals = self.models
        levels.rescale(rows, pos, gain, shift)
        residuals.rescale(rows, pos, gain, None)

    # -- SlotState -------------------------------------------------------------------------

    def grow(self, capacity: int) -> None:
        self.dev_row = grown(self.dev_row, capacity, -1)
        self.dev_pos = grown(self.dev_pos, capacity, -1)

    def reset(self, slot: int) -> None:
        """Free the slot's position in its device's models (the device once empty)."""
        dev = int(self.dev_row[slot])
        if dev >= 0:
            for model in self.models:
                model.detach(dev, int(self.dev_pos[slot]))
        self.dev_row[slot], self.dev_pos[slot] = -1, -1

    def snapshot(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        for prefix, model in zip(PREFIXES, self.models, strict=True):
            rows = model.slot_state(self.dev_row[slots], self.dev_pos[slots])
            state.update({f"{prefix}_{k}": v for k, v in rows.items()})
        return state

    def restore(self, slots: np.ndarray, state: Mapping[str, np.ndarray]) -> None:
        for prefix, model in zip(PREFIXES, self.models, strict=True):
            names = [f"{prefix}_{k}" for k in _ROW_STATE]
            if all(n in state for n in names):  # older checkpoints: devices learn afresh
                per_series = {n.split("_", 1)[1]: state[n][: len(slots)] for n in names}
                model.restore_slots(self.dev_row[slots], self.dev_pos[slots], per_series)

    def nbytes(self) -> int:
        models = sum(m.nbytes() for m in self.models)
        return models + self.dev_row.nbytes + self.dev_pos.nbytes
