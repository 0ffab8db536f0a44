"""Alert calibration on held-out history: counting alerts and choosing the divisor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.detection_config import DetectionConfig
from training.alerting import calibrate, count_alerts, heldout_stream

CFG = DetectionConfig(resolve_after=1, quiet_period=0)


def _z_at_half() -> float:
    """The z whose score is 0.5: upper normal tail + 1e-10 = 1e-5 (bisection on erfc)."""
    lo, hi = 3.0, 6.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) + 1e-10 > 1e-5:
            lo = mid
        else:
            hi = mid
    return lo


def _trace(zs: list[float], flags: list[bool] | None = None) -> list:
    flags = flags or [False] * len(zs)
    return [
        (np.array([0]), np.array([float(t)]), np.array([z]), np.array([f]))
        for t, (z, f) in enumerate(zip(zs, flags, strict=True))
    ]


def test_alerts_are_counted_as_episodes() -> None:
    trace = _trace([5.0, 0.0, 5.0, 0.0, 9.0, 0.0])
    assert count_alerts(trace, 1.0, CFG, 1) == 3
    assert count_alerts(trace, 1.5, CFG, 1) == 1  # 5 / 1.5 = 3.3 is below 4.26, 9 / 1.5 is not
    assert count_alerts(trace, 2.5, CFG, 1) == 0
    # Consecutive anomalous readings are one episode.
    assert count_alerts(_trace([5.0, 6.0, 7.0, 0.0]), 1.0, CFG, 1) == 1


def test_the_smallest_divisor_that_meets_the_budget() -> None:
    trace = _trace([5.0, 0.0, 5.0, 0.0, 9.0, 0.0])
    got = calibrate(trace, CFG, budget=1.0, series=1, days=1.0)
    # One alert allowed: the two 5s must fall below the z of score 0.5.
    exact = 5.0 / _z_at_half()
    assert exact <= got.z_scale <= exact * 1.011
    assert got.alerts == 1 and got.alerts_at_default == 3 and got.reachable


def test_no_calibration_needed_keeps_one() -> None:
    got = calibrate(_trace([1.0, 2.0, 3.0]), CFG, budget=0.05, series=1, days=1.0)
    assert got.z_scale == 1.0 and got.alerts == 0


def test_certain_signals_cannot_be_calibrated_away() -> None:
    got = calibrate(_trace([0.0, 0.0, 0.0, 0.0], [True, False, True, False]), CFG, 0.5, 1, 1.0)
    assert not got.reachable and got.alerts == 2


def test_heldout_stream_primes_from_the_training_part_and_merges_in_time() -> None:
    series = {
        "a/x": (np.arange(10.0), np.arange(10.0)),
        "b/y": (np.arange(10.0) + 0.5, -np.arange(10.0)),
    }
    stream = heldout_stream(series, {"a/x": 8, "b/y": 6})
    assert stream.heldout_from == {"a/x": 8.0, "b/y": 6.5}
    assert np.all(np.diff(stream.ts) >= 0)
    assert stream.ts.size == 20  # both series are shorter than the priming length
    # Held-out days summed over series: a/x 8 -> 9 (1 s), b/y 6.5 -> 9.5 (3 s).
    assert stream.series_days == pytest.approx(4.0 / 86_400.0)
