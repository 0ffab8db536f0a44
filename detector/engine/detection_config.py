"""`DetectionConfig`: the tunables of the detection core, their defaults and their docs.

A leaf: no numpy, nothing of the core. `detector.config.settings` builds the worker's
``IOTAD_DETECTION__*`` settings from it (adding the bounds), so importing the settings, or the
MQTT client that reads them, does not load the detection core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detector.engine.scoring import ScoringConfig


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Tunables of the detection core (the worker's `IOTAD_DETECTION__*` settings).

    The defaults are the ones measured best on the Numenta Anomaly Benchmark (see
    docs/detection.md); `iotad eval nab` and `iotad run` use the same.
    """

    threshold: float = 0.5
    """Score (in [0, 1]) at or above which a reading is anomalous; 0.5 is a tail
    probability of 1e-5 (see `detector.engine.scoring`)."""
    resolve_after: int = 5
    """Normal readings in a row that end an anomalous episode (hysteresis)."""
    quiet_period: int = 100
    """Readings after an episode fires before it may resolve (and so fire again)."""
    band_sigmas: float = 3.0
    """Half-width of the expected band, in residual standard deviations."""
    error_halflife: int = 1000
    """Readings over which the residual statistics of the band forget half their past."""
    error_clip: float = 6.0
    """Residuals enter the band's statistics clipped to this many standard deviations."""
    likelihood_halflife: int = 800
    """Readings over which the long-run distributions of forecast errors (the model's and
    the seasonal one's) forget half (NAB: 700-1000 within 0.3 of each other, 600 one window
    fewer)."""
    level_halflife: int = 2500
    """Readings over which the long-run distribution of values forgets half. Longer than the
    errors': a recent level is judged against days of history, not against a trend of the
    last hours it is part of (NAB: 1000 found one window fewer, 2000-3000 within 0.4)."""
    short_window: int = 10
    """Readings in the recent mean of errors and of values that the long run is asked about."""
    range_tolerance: float = 0.004
    """A value beyond the range seen so far by more than this fraction of it scores 1. A
    little above 0: a new maximum by a hair (a quantisation step, noise at a ceiling) is not
    news (NAB: 0 gave 32 more false alarms; 0.005 found one window fewer)."""
    use_level: bool = True
    """Score unusual recent levels, not only unusual forecast errors."""
    use_range: bool = True
    """Score values outside the range seen so far."""
    flatline_min: int = 100
    """A series that repeats exactly one value for longer than it ever did before, and for at
    least this many readings, scores 1 (a stuck sensor or feed); 0 turns the signal off
    (NAB: one more window found; 50-200 within 0.3)."""
    sustained_window: int = 60
    """Readings the `sustained` signal averages a device model's deviations over (an
    exponentially weighted mean of this equivalent length): a sensor that creeps away from
    what its machine implies, too slowly for the mean of `short_window` deviations to show
    it (set before any benchmark run: an hour of one reading a minute; not tuned)."""
    learn_readings: int = 100
    """A series the model was not trained on scores 0 while its statistics learn from its
    first this many scored readings; a series without a recorded range learns it as long."""
    relate_devices: bool = True
    """Judge each reading against its device's other sensors at the same timestamp (the
    artifact's device models where they apply, see `detector.engine.device_model`, otherwise the
    linear relations of `detector.engine.relations`): a machine changing state moves its sensors
    together, a fault moves one against the others. Off: every series is judged on its own."""
    silence_after: float = 5.0
    """A series that has not reported for this many of its typical intervals, while others
    have (the clock is the newest reading's timestamp), fires a ``silence`` alert; it
    resolves with the series' next reading. 0 turns it off."""
    max_series: int = 100_000
    """Active series beyond which new series are dropped with reason ``too_many_series``."""
    idle_evict_s: float = 86_400.0
    """A series with no reading for this long is evicted (its slot is reused, and an alert
    still open on it resolves with reason ``evicted``); the sweep runs every quarter of this,
    at most once a minute."""

    def scoring(self) -> ScoringConfig:
        """The scorer's parameters (`detector.engine.scoring.AnomalyScorer`)."""
        # Imported here: the settings import this module, and must not load numpy.
        from detector.engine.scoring import ScoringConfig

        return ScoringConfig(
            likelihood_halflife=self.likelihood_halflife,
            level_halflife=self.level_halflife,
            short_window=self.short_window,
            range_tolerance=self.range_tolerance,
            use_level=self.use_level,
            use_range=self.use_range,
            learn_readings=self.learn_readings,
            flatline_min=self.flatline_min,
            sustained_window=self.sustained_window,
        )
