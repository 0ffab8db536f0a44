from __future__ import annotations

import numpy as np

from detector.engine.seasonality import PeriodRings, estimate_period


def test_period_of_a_repeating_pattern_is_found() -> None:
    rng = np.random.default_rng(0)
    day = np.r_[np.zeros(30), np.ones(18) * 5]  # 48 readings: a shift pattern
    values = np.tile(day, 10) + rng.normal(0, 0.3, 480)
    assert estimate_period(values) == 48


def test_noise_has_no_period() -> None:
    rng = np.random.default_rng(1)
    assert estimate_period(rng.normal(0, 1, 2000)) is None
    assert estimate_period(np.full(500, 3.0)) is None  # flat: no variance
    assert estimate_period(np.arange(10.0)) is None  # too short for any lag


def test_rings_forecast_the_value_one_period_back() -> None:
    rings = PeriodRings()
    rings.set_period(7, 3)
    out = [rings.forecast_and_push(np.array([7, 8]), np.array([v, -v]))[0] for v in range(6)]
    # Nothing known for the first period, then the value 3 readings earlier.
    assert np.isnan(out[:3]).all() and out[3:] == [0.0, 1.0, 2.0]
    # Slot 8 has no period: always NaN.
    assert np.isnan(rings.forecast_and_push(np.array([8]), np.array([1.0]))).all()
