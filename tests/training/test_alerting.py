"""Alert calibration on held-out history: counting alerts and choosing the divisor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.engine.detection_config import DetectionConfig
from detector.engine.scoring import SIGNALS
from training.alerting import calibrate, calibrate_signals, count_alerts, heldout_stream

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


def _parts_trace(columns: dict[str, list[float]], flags: list[bool] | None = None) -> list:
    """One series; each reading's deviation per named signal (others 0), as a traced core
    records them (the pooled z column is their maximum)."""
    n = len(next(iter(columns.values())))
    flags = flags or [False] * n
    out = []
    for t in range(n):
        parts = np.zeros((1, len(SIGNALS)))
        for name, values in columns.items():
            parts[0, SIGNALS.index(name)] = values[t]
        z = np.array([parts.max()])
        out.append((np.array([0]), np.array([float(t)]), z, np.array([flags[t]]), None, parts))
    return out


def test_each_signal_gets_its_own_divisor_for_its_share() -> None:
    # "relation" has a heavy normal tail (one 20 among 5s), "forecast" a light one (5s).
    gap = [0.0] * 3
    relation = [20.0, *gap, 5.0, *gap, 5.0, *gap] + [0.0] * 12
    forecast = [0.0] * 12 + [5.0, *gap, 5.0, *gap, 6.0, *gap]
    trace = _parts_trace({"relation": relation, "forecast": forecast})
    got = calibrate_signals(trace, CFG, budget=2.0, series=1, days=1.0)
    assert got.signal_scales is not None
    # Every signal that is not certain is named (the core leaves an unnamed one off).
    assert set(got.signal_scales) == set(SIGNALS) - {"range", "flatline"}
    assert {k for k, v in got.signal_scales.items() if v != 1.0} == {"relation", "forecast"}
    # One alert each: relation keeps only its 20 (divisor just above 5 / z_half), forecast
    # only its 6 (just above 5 / z_half): the same divisor, though relation's tail is far
    # heavier; one pooled divisor for two alerts would have let two of relation's through
    # and silenced forecast's 6 along with its 5s.
    exact = 5.0 / _z_at_half()
    assert exact <= got.signal_scales["relation"] <= exact * 1.011
    assert exact <= got.signal_scales["forecast"] <= exact * 1.011
    assert got.alerts == 2 and got.alerts_at_default == 6 and got.reachable
    assert got.to_dict(2.0)["z_scales"] == got.signal_scales


def test_signals_that_never_fire_take_no_share() -> None:
    trace = _parts_trace({"relation": [9.0, 0.0, 7.0, 0.0], "forecast": [1.0, 2.0, 1.0, 2.0]})
    got = calibrate_signals(trace, CFG, budget=1.0, series=1, days=1.0)
    assert got.signal_scales is not None
    assert {k for k, v in got.signal_scales.items() if v != 1.0} == {"relation"}
    assert got.alerts == 1


def test_certain_signals_come_off_the_budget_first() -> None:
    trace = _parts_trace({"forecast": [0.0, 9.0, 0.0, 0.0]}, [True, False, False, False])
    # Budget 1 alert: the flag takes it, so forecast's share is 0 and its 9 must go.
    got = calibrate_signals(trace, CFG, budget=1.0, series=1, days=1.0)
    assert got.signal_scales is not None and got.signal_scales["forecast"] > 9.0 / _z_at_half()
    assert got.alerts == 1 and got.reachable


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
