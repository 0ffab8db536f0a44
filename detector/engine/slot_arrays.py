"""Growing the per-slot state arrays: one row per series slot, new rows at their start value."""

from __future__ import annotations

import numpy as np


def grown(array: np.ndarray, capacity: int, fill: float) -> np.ndarray:
    """`array` with at least `capacity` rows, the new ones set to `fill` (same dtype and row
    shape); the array itself when it is already that long."""
    if array.shape[0] >= capacity:
        return array
    out = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out
