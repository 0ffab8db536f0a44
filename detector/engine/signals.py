"""The scorer's signals by name, and how the strongest of them is picked for each reading.

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

The relation signals are described with `SIGNALS`.
"""

from __future__ import annotations

import numpy as np

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


class StrongestSignal:
    """The largest deviation (z) of each reading among the signals taken so far, which
    signal it came from (`which`, indexed like `SIGNALS`), and with `record_parts` every
    signal's own deviation, undivided (`parts`).

    Each signal's deviation is divided by its divisor in `signal_scales` (None: all 1)
    before it competes. The forecast signal (index 0) starts it.
    """

    def __init__(
        self, forecast_z: np.ndarray, signal_scales: np.ndarray | None, record_parts: bool
    ) -> None:
        self.parts = np.zeros((len(forecast_z), len(SIGNALS))) if record_parts else None
        if self.parts is not None:
            self.parts[:, 0] = forecast_z
        self.signal_scales = signal_scales
        self.z = forecast_z if signal_scales is None else forecast_z / signal_scales[0]
        self.which = np.zeros(forecast_z.shape, dtype=np.int8)

    def take(self, k: int, candidate: np.ndarray) -> None:
        """Let signal `k`'s deviations `candidate` compete."""
        if self.parts is not None:
            self.parts[:, k] = np.maximum(self.parts[:, k], candidate)
        if self.signal_scales is not None:
            candidate = candidate / self.signal_scales[k]
        self.which[candidate > self.z] = k
        self.z = np.maximum(self.z, candidate)
