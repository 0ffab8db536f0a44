"""The detection core: windows, batched forecasts, scoring and decisions. Pure, no I/O.

The worker (`iotad run`), offline replay / NAB evaluation (`iotad eval`) and the tests all
call `DetectionCore.process` with plain `Reading`s and get a `BatchResult` back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detector.artifact import Artifact
from detector.events import BatchResult
from detector.forecaster import Forecaster
from detector.readings import Reading


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Tunables of the detection core (the worker's `IOTAD_DETECTION__*` settings)."""

    threshold: float = 4.0
    """Score above which a reading is anomalous (score = |residual| / residual std)."""
    resolve_after: int = 5
    """Normal readings in a row that end an anomalous episode (hysteresis)."""
    error_halflife: int = 1000
    """Readings over which the online residual statistics forget half their past."""
    max_series: int = 100_000
    """Active series beyond which new series are dropped with reason ``too_many_series``."""
    idle_evict_s: float = 86_400.0
    """A series with no reading for this long is evicted (its slot is reused)."""


class DetectionCore:
    """Scores readings against a forecaster, keeping per-series state in numpy arrays."""

    def __init__(
        self, artifact: Artifact, forecaster: Forecaster, config: DetectionConfig | None = None
    ) -> None:
        raise NotImplementedError

    def process(self, readings: Sequence[Reading]) -> BatchResult:
        """Take a batch of readings (any series, any order in time across series).

        Readings of one series must be in increasing `ts`; one whose ts is not after the
        series' last one is dropped with reason ``out_of_order`` (``duplicate`` when ts and
        value equal the last reading's). All ready windows go to the forecaster in **one**
        call. Returns scored readings, alert events, dropped readings and counts.
        """
        raise NotImplementedError

    @property
    def active_series(self) -> int:
        raise NotImplementedError

    @property
    def warming_series(self) -> int:
        raise NotImplementedError

    def evict_idle(self, now: float) -> int:
        """Free the slots of series idle for longer than `idle_evict_s`; returns how many."""
        raise NotImplementedError
