from __future__ import annotations

import numpy as np
import pytest

from detector.engine.artifact import ErrorStats
from detector.engine.detection_config import DetectionConfig
from detector.engine.scoring import AnomalyScorer, ErrorTracker, RecentMean, tail_score


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


def test_default_range_tolerance_ignores_a_new_maximum_by_a_hair() -> None:
    scorer = AnomalyScorer(1, DetectionConfig(use_level=False).scoring())
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10)
    scorer.seed(0, stats, 0.0, 1.0, (0.0, 100.0))
    slot = np.array([0])
    # Range [0, 100], default tolerance 0.004 * 100 = 0.4: 100.3 is no news, 101 is.
    assert scorer.score(slot, np.array([100.3]), np.array([0.0]))[0] < 0.5
    # The range grew to 100.3, so the margin is 0.4012 above it.
    assert scorer.score(slot, np.array([100.6]), np.array([0.0]))[0] < 0.5
    assert scorer.score(slot, np.array([101.5]), np.array([0.0]))[0] == 1.0


def test_level_statistics_forget_with_their_own_halflife() -> None:
    # Level half-life 1 -> alpha 0.5; error half-life 1e9 -> alpha ~7e-10.
    cfg = DetectionConfig(level_halflife=1, likelihood_halflife=10**9).scoring()
    scorer = AnomalyScorer(1, cfg)
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10, abs_mean=1.0, abs_std=1.0)
    scorer.seed(0, stats, 0.0, 1.0, (-100.0, 100.0))
    scorer.score(np.array([0]), np.array([4.0]), np.array([3.0]))
    # value: mean = 0 + 0.5 * 4 = 2, var = 0.5 * (1 + 4 * 2) = 4.5
    assert scorer.value_run.mean[0] == pytest.approx(2.0)
    assert scorer.value_run.var[0] == pytest.approx(4.5)
    # |error| 3 barely moves the error statistics seeded at mean 1.
    assert scorer.error_run.mean[0] == pytest.approx(1.0, abs=1e-8)


def test_learnt_slots_forget_exponentially_not_as_a_running_mean() -> None:
    # A trained series (trusted from the start) with half-life 1: alpha 0.5 on the very
    # first reading, not the running mean's 1 / (seen + 1) = 1.
    cfg = DetectionConfig(level_halflife=1, likelihood_halflife=1).scoring()
    scorer = AnomalyScorer(1, cfg)
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10, abs_mean=1.0, abs_std=1.0)
    scorer.seed(0, stats, 0.0, 1.0, (-100.0, 100.0), trained=True)
    scorer.score(np.array([0]), np.array([4.0]), np.array([3.0]))
    assert scorer.value_run.mean[0] == pytest.approx(2.0)  # 0 + 0.5 * 4
    assert scorer.error_run.mean[0] == pytest.approx(2.0)  # 1 + 0.5 * (3 - 1)


def test_per_slot_counters_are_int32() -> None:
    # 100,000 series: every per-slot int64 counter costs 0.4 MB more than it needs.
    scorer = AnomalyScorer(4, DetectionConfig().scoring())
    counters = [
        scorer.seen_count,
        scorer.seasonal_error_stats.seen_count,
        scorer.recent_error.count,
    ]
    assert all(c.dtype == np.int32 for c in counters)
    scorer.ensure_capacity(8)
    assert scorer.seen_count.dtype == np.int32 and scorer.recent_value.count.dtype == np.int32


def test_counters_saturate_instead_of_wrapping() -> None:
    # A 100 Hz series passes 2**31 readings in 248 days; a wrapped `seen` would send it back
    # to learning (score 0) for good.
    cfg = DetectionConfig(learn_readings=5)
    scorer = AnomalyScorer(1, cfg.scoring())
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10, abs_mean=1.0, abs_std=1.0)
    scorer.seed(0, stats, 0.0, 1.0, (-100.0, 100.0), trained=False)
    scorer.seen_count[0] = np.iinfo(np.int32).max - 1
    for _ in range(3):
        score = scorer.score(np.array([0]), np.array([0.0]), np.array([50.0]))
    assert scorer.seen_count[0] > 0
    assert score[0] > 0.5  # still scoring: a 50-sigma error is news, not "learning"


def test_recent_mean_count_stays_bounded_and_keeps_its_ring_position() -> None:
    recent = RecentMean(1, 3)
    for x in range(1, 101):
        mean = recent.push(np.array([0]), np.array([float(x)]))
    assert mean[0] == pytest.approx((98 + 99 + 100) / 3)
    assert recent.count[0] < 6


def test_only_series_with_a_period_hold_seasonal_rows() -> None:
    scorer = AnomalyScorer(1000, DetectionConfig().scoring())
    errors = scorer.seasonal_error_stats
    errors.attach(10)
    errors.attach(500)
    assert errors.seen_count.shape[0] < 100  # rows for the periodic ones, not for 1000 slots
    assert (errors.row >= 0).sum() == 2
    errors.detach(10)
    errors.attach(7)  # reuses the freed row
    assert sorted(errors.row[[7, 500]].tolist()) == [0, 1]
    # A slot without a row gets no seasonal score and changes nothing.
    out = errors.score(np.array([3, 7]), np.array([5.0, 5.0]), learn_readings=0)
    assert out[0] == 0.0 and errors.seen_count[errors.row[7]] == 1


def _flatline_scorer(flatline_min: int) -> AnomalyScorer:
    # Level and range off, error statistics wide: only the flatline signal can score.
    cfg = DetectionConfig(use_level=False, use_range=False, flatline_min=flatline_min)
    scorer = AnomalyScorer(1, cfg.scoring())
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10, abs_mean=1.0, abs_std=1.0)
    scorer.seed(0, stats, 0.0, 1.0, (-100.0, 100.0))
    return scorer


def _flat_scores(scorer: AnomalyScorer, repeats: list[bool]) -> list[float]:
    slot = np.array([0])
    return [
        float(scorer.score(slot, np.array([0.0]), np.array([0.0]), None, np.array([r]))[0])
        for r in repeats
    ]


def test_flatline_scores_a_run_longer_than_any_before() -> None:
    scorer = _flatline_scorer(flatline_min=3)
    # 4 repeats before the first change (not stuck: no run to compare with yet), the change
    # completes that run of 4, then 6 repeats: the 5th and 6th are longer than 4.
    repeats = [True] * 4 + [False] + [True] * 6
    scores = _flat_scores(scorer, repeats)
    assert scores[:9] == [0.0] * 9
    assert scores[9:] == [1.0, 1.0]
    # The value moves again: the run of 6 is now the longest, and nothing scores.
    assert _flat_scores(scorer, [False, True, True]) == [0.0, 0.0, 0.0]
    assert scorer.longest_repeat_count[0] == 6


def test_flatline_needs_the_minimum_length() -> None:
    scorer = _flatline_scorer(flatline_min=10)
    # Runs of 1 then 5: the 5-run beats the longest (1) but is shorter than 10. The repeat
    # likelihood sees it (half of these readings repeat: 5 in a row is a 1-in-32 event),
    # far below an alert.
    scores = _flat_scores(scorer, [False, True, False] + [True] * 5)
    assert 0.0 < max(scores) < 0.1


def test_a_series_that_never_changed_is_not_stuck() -> None:
    # Constant from the start: no completed run to compare with, so no flatline alarm.
    scorer = _flatline_scorer(flatline_min=3)
    assert max(_flat_scores(scorer, [True] * 50)) == 0.0


def test_flatline_off_at_zero() -> None:
    scorer = _flatline_scorer(flatline_min=0)
    # No flag (a score of 1); what is left is the repeat likelihood of a series that
    # repeated most of its readings, far from an alert.
    assert max(_flat_scores(scorer, [False, True, False] + [True] * 20)) < 0.1


def test_a_noisy_sensor_that_stops_changing_is_news_within_a_few_readings() -> None:
    # 400 readings that never repeat, then repeats: the repeat rate is floored at what 400
    # readings resolve (about 1/401), so k repeats have probability ~401**-k. Score 0.5 is
    # a tail of 1e-5: two repeats (6e-6) cross it, one (2.5e-3) does not.
    scorer = _flatline_scorer(flatline_min=0)
    scores = _flat_scores(scorer, [False] * 400 + [True] * 3)
    assert max(scores[:400]) == 0.0
    assert scores[400] < 0.5 <= scores[401] <= scores[402]


def test_a_deviation_that_is_not_a_number_scores_one() -> None:
    # NaN compares false with the threshold: as a score it would silently mean "normal".
    assert tail_score(np.array([np.nan, 0.0])).tolist() == [1.0, 0.0]


def test_state_gone_bad_scores_one_not_zero() -> None:
    scorer = AnomalyScorer(2, DetectionConfig().scoring())
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10)
    for slot in (0, 1):
        scorer.seed(slot, stats, 0.0, 1.0, (-5.0, 5.0))
    # Slot 0's long-run statistics as a 1e308 once left them: inf, then NaN.
    scorer.error_run.mean[0], scorer.value_run.var[0] = np.nan, np.inf
    got = scorer.score(np.array([0, 1]), np.array([0.1, 0.1]), np.array([0.0, 0.0]))
    assert got[0] == 1.0 and got[1] < 0.5


def test_huge_inputs_leave_the_statistics_finite() -> None:
    scorer = AnomalyScorer(1, DetectionConfig().scoring())
    stats = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=10)
    scorer.seed(0, stats, 0.0, 1.0, (-5.0, 5.0))
    slot = np.array([0])
    for x in (1e300, -1e300, 1e308, 0.0, 3e38, -3e38):
        score = scorer.score(slot, np.array([x]), np.array([x]), np.array([x]))
        assert 0.0 <= score[0] <= 1.0
    for array in (
        scorer.recent_value.ring,
        scorer.recent_value.total,
        scorer.recent_error.ring,
        scorer.recent_error.total,
        scorer.error_run.mean,
        scorer.error_run.var,
        scorer.value_run.mean,
        scorer.value_run.var,
        scorer.low,
        scorer.high,
    ):
        assert np.isfinite(array).all()
