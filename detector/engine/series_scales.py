"""The scale table: each series' normalisation (offset, scale) and its alerting divisor."""

from __future__ import annotations

import numpy as np

from detector.engine.artifact import SeriesScale
from detector.engine.features import fit_scale
from detector.engine.slot_state import Column, ColumnState


class SeriesScales(ColumnState):
    """Per slot: the offset and scale that map readings to the model's units (from the
    artifact, or fitted on the first window of a series it was not trained on), and the
    alerting calibration's divisor `z_scale` (the artifact's, set at allocation)."""

    name = "scales"
    columns = (
        Column("offset", "offset", 0.0),
        Column("scale", "scale", 1.0),
        Column("has_scale", "has_scale", False),
        Column("z_scale", "z_scale", 1.0, saved=False),
    )

    def __init__(self, capacity: int) -> None:
        self.offset = np.zeros(capacity, dtype=np.float64)
        self.scale = np.ones(capacity, dtype=np.float64)
        self.has_scale = np.zeros(capacity, dtype=bool)
        self.z_scale = np.ones(capacity, dtype=np.float64)

    def seed(self, slot: int, known: SeriesScale | None, z_scale: float) -> None:
        """Start a reset slot with the artifact's scale of its series (None: not known)."""
        self.z_scale[slot] = z_scale
        if known is not None:
            self.offset[slot], self.scale[slot] = known.offset, known.scale
            self.has_scale[slot] = True

    def scaled(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`values` (one row or value per slot) in the model's units."""
        if values.ndim == 2:
            out: np.ndarray = (values - self.offset[slots, None]) / self.scale[slots, None]
        else:
            out = (values - self.offset[slots]) / self.scale[slots]
        return out

    def to_raw(self, slots: np.ndarray, scaled: np.ndarray) -> np.ndarray:
        """One scaled value per slot back in the series' own units."""
        raw: np.ndarray = scaled * self.scale[slots] + self.offset[slots]
        return raw

    def to_raw_width(self, slots: np.ndarray, width: np.ndarray) -> np.ndarray:
        """One distance (a band's width, an error's mean) per slot in the series' own
        units: scaled, but not shifted."""
        raw: np.ndarray = width * self.scale[slots]
        return raw

    def z_scales(self, slots: np.ndarray) -> np.ndarray:
        """The alerting divisor of each slot."""
        divisor: np.ndarray = self.z_scale[slots]
        return divisor

    def set_z_scales(self, slots: np.ndarray, divisors: list[float]) -> None:
        """Give `slots` the alerting divisors of a (new) artifact."""
        self.z_scale[slots] = divisors

    def fit_missing(self, slots: np.ndarray, windows: np.ndarray, method: str) -> None:
        """Series the model was not trained on take their scale from their first window."""
        missing = ~self.has_scale[slots]
        for slot, window in zip(slots[missing].tolist(), windows[missing], strict=True):
            offset, scale = fit_scale(window, method)
            # A nearly flat warm-up window would blow later deviations up to huge inputs.
            scale = max(scale, 1e-3 * max(1.0, abs(offset)))
            self.offset[slot], self.scale[slot] = offset, scale
            self.has_scale[slot] = True
