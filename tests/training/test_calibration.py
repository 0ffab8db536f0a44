"""Residual statistics for threshold calibration, on hand-computed residuals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.calibration import QUANTILES, calibrate, error_stats, rmse


def test_error_stats_by_hand() -> None:
    stats = error_stats(np.array([1.0, -1.0, 3.0, -3.0]))
    assert stats["mean"] == 0.0
    assert stats["std"] == pytest.approx(math.sqrt((1 + 1 + 9 + 9) / 4))
    assert stats["n"] == 4
    # |r| = 1, 1, 3, 3: mean 2, every value 1 away from it.
    assert stats["abs_mean"] == pytest.approx(2.0) and stats["abs_std"] == pytest.approx(1.0)
    # Sorted |r| = 1, 1, 3, 3 with linear interpolation: the median sits at rank 1.5,
    # halfway from 1 to 3; q0.9 at rank 2.7, between two 3s.
    assert stats["abs_quantiles"]["0.5"] == pytest.approx(2.0)
    assert stats["abs_quantiles"]["0.9"] == pytest.approx(3.0)
    assert set(stats["abs_quantiles"]) == set(QUANTILES)


def test_quantiles_of_0_to_1000() -> None:
    stats = error_stats(np.arange(1001.0))  # |r| = 0..1000, the q-quantile is 1000 q
    assert stats["abs_quantiles"] == {"0.5": 500.0, "0.9": 900.0, "0.99": 990.0, "0.999": 999.0}
    assert stats["mean"] == 500.0


def test_empty_residuals_give_zeros() -> None:
    stats = error_stats(np.array([]))
    assert stats["n"] == 0 and stats["std"] == 0.0 and stats["abs_mean"] == 0.0


def test_calibrate_per_series_and_pooled() -> None:
    residuals = np.array([1.0, -1.0, 2.0, 4.0, 6.0])
    ids = np.array([1, 1, 0, 0, 0])
    per_series, pooled = calibrate(residuals, ids, ["a/x", "b/y", "c/z"])
    assert set(per_series) == {"a/x", "b/y"}  # c/z has no validation windows
    assert per_series["a/x"]["mean"] == pytest.approx(4.0)
    assert per_series["a/x"]["n"] == 3
    assert per_series["b/y"]["mean"] == 0.0 and per_series["b/y"]["std"] == 1.0
    assert pooled["n"] == 5 and pooled["mean"] == pytest.approx(12.0 / 5)


def test_rmse() -> None:
    assert rmse(np.array([3.0, -4.0])) == pytest.approx(math.sqrt(12.5))
    assert rmse(np.array([])) == 0.0
