from __future__ import annotations

import numpy as np
import pytest

from detector.artifact import ErrorStats
from detector.core import DetectionConfig
from detector.scoring import AnomalyScorer, ErrorTracker, RecentMean, tail_score


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


def test_tail_score_maps_tail_probabilities_to_a_log_scale() -> None:
    # P(Z > 4.2649) = 1e-5 -> log(1e-5) / log(1e-10) = 0.5; below the mean scores 0.
    scores = tail_score(np.array([-3.0, 0.0, 4.2649, 7.0]))
    assert scores[0] == 0.0 and scores[1] == 0.0
    assert scores[2] == pytest.approx(0.5, abs=1e-4)
    assert 0.999 < scores[3] <= 1.0


def test_recent_mean_is_the_mean_of_the_last_n() -> None:
    recent = RecentMean(capacity=1, length=3)
    means = [recent.push(np.array([0]), np.array([x]))[0] for x in (3.0, 6.0, 9.0, 12.0)]
    assert means == pytest.approx([3.0, 4.5, 6.0, 9.0])


def test_range_signal_scores_values_beyond_what_was_seen() -> None:
    scorer = AnomalyScorer(1, DetectionConfig(use_level=False, range_tolerance=0.5).scoring())
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10)
    scorer.seed(0, stats, 0.0, 1.0, (0.0, 2.0))
    slot = np.array([0])
    # Range [0, 2], tolerance 0.5 * 2 = 1: 2.9 is inside, 3.5 outside.
    assert scorer.score(slot, np.array([2.9]), np.array([0.0]))[0] < 1.0
    assert scorer.score(slot, np.array([4.5]), np.array([0.0]))[0] == 1.0
