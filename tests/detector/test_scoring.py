from __future__ import annotations

import numpy as np
import pytest

from detector.artifact import ErrorStats
from detector.scoring import ErrorTracker


def test_score_is_distance_from_mean_in_stds() -> None:
    tracker = ErrorTracker(capacity=2, halflife=1, clip=10)
    tracker.seed(0, ErrorStats(mean=0.5, std=2.0, abs_quantiles={}, n=10))
    # |4.5 - 0.5| / 2 = 2
    assert tracker.score(np.array([0]), np.array([4.5])).tolist() == [2.0]


def test_update_is_an_exponentially_weighted_mean_and_variance() -> None:
    tracker = ErrorTracker(capacity=1, halflife=1, clip=10)  # halflife 1 -> alpha 0.5
    tracker.seed(0, ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10))
    tracker.update(np.array([0]), np.array([3.0]))
    # mean = 0 + 0.5 * 3 = 1.5; var = 0.5 * (1 + 3 * 1.5) = 2.75
    assert tracker.mean[0] == pytest.approx(1.5)
    assert tracker.var[0] == pytest.approx(2.75)


def test_update_clips_wild_residuals() -> None:
    tracker = ErrorTracker(capacity=1, halflife=1, clip=2)
    tracker.seed(0, ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10))
    tracker.update(np.array([0]), np.array([1000.0]))
    # clipped to 2: mean = 1, var = 0.5 * (1 + 2 * 1) = 1.5
    assert tracker.mean[0] == pytest.approx(1.0)
    assert tracker.var[0] == pytest.approx(1.5)
