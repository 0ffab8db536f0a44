"""Forecasters: window batches in, one-step forecasts out. LiteRT in the worker."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Forecaster(Protocol):
    """Anything that forecasts the next scaled value of each window in a batch."""

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """`windows` is ``(B, W, F)`` float32; returns ``(B,)`` float32 scaled forecasts."""
        ...
