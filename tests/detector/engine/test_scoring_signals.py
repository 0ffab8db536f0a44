"""`AnomalyScorer.score`'s per-signal divisors, `record_parts`, and the lasting signal of
standardised (device-model) deviations. Every expected number is worked out here by hand.

The scorer is seeded so that the forecast signal is plain arithmetic: |residual| statistics
with mean 0 and std 1 and a short window of 1 make the forecast deviation |residual|.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.engine.artifact import ErrorStats
from detector.engine.scoring import SIGNALS, AnomalyScorer, ScoringConfig

FORECAST = SIGNALS.index("forecast")
RELATION = SIGNALS.index("relation")
LASTING = SIGNALS.index("lasting")
RANGE = SIGNALS.index("range")

# |residual| has mean 0 and std 1: the forecast deviation of a reading is |residual| (with a
# short window of 1).
UNIT_ABS = ErrorStats(mean=0.0, std=1.0, abs_quantiles={}, n=100, abs_mean=0.0, abs_std=1.0)


def config(
    short_window: int = 1,
    learn_readings: int = 0,
    use_range: bool = False,
    sustained_window: int = 60,
) -> ScoringConfig:
    return ScoringConfig(
        likelihood_halflife=800,
        level_halflife=2500,
        short_window=short_window,
        range_tolerance=0.0,
        use_level=False,
        use_range=use_range,
        learn_readings=learn_readings,
        flatline_min=0,
        sustained_window=sustained_window,
    )


def scorer_for(cfg: ScoringConfig, slots: int = 1) -> AnomalyScorer:
    scorer = AnomalyScorer(slots, cfg)
    for slot in range(slots):
        scorer.seed(slot, UNIT_ABS, 0.0, 1.0, (-1e3, 1e3), trained=True)
    return scorer


def divisors(**named: float) -> np.ndarray:
    return np.array([named.get(name, 1.0) for name in SIGNALS])


def tail_by_hand(z: float) -> float:
    """The module's score of a deviation z: log(P(Z > z) + 1e-10) / log(1e-10)."""
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    return math.log(tail + 1e-10) / math.log(1e-10)


def one(
    scorer: AnomalyScorer,
    residual: float,
    relation_z: float,
    scales: np.ndarray | None,
    z_scale: float = 1.0,
) -> float:
    score = scorer.score(
        np.array([0]),
        np.array([0.0]),
        np.array([residual]),
        relation_z=np.array([relation_z]),
        z_scale=z_scale,
        signal_scales=scales,
    )
    return float(score[0])


# -- per-signal divisors ---------------------------------------------------------------------


def test_without_divisors_the_larger_deviation_wins() -> None:
    scorer = scorer_for(config())
    score = one(scorer, residual=3.0, relation_z=10.0, scales=None)
    assert int(scorer.last_signal[0]) == RELATION
    assert scorer.last_z[0] == pytest.approx(10.0)
    assert score == pytest.approx(tail_by_hand(10.0))


def test_a_relation_of_10_divided_by_5_loses_to_a_forecast_of_3() -> None:
    scorer = scorer_for(config())
    score = one(scorer, residual=3.0, relation_z=10.0, scales=divisors(relation=5.0))
    # relation 10 / 5 = 2 < forecast 3 / 1 = 3
    assert int(scorer.last_signal[0]) == FORECAST
    assert scorer.last_z[0] == pytest.approx(3.0)
    assert score == pytest.approx(tail_by_hand(3.0))


def test_a_relation_of_10_divided_by_2_still_beats_a_forecast_of_3() -> None:
    scorer = scorer_for(config())
    score = one(scorer, residual=3.0, relation_z=10.0, scales=divisors(relation=2.0))
    # relation 10 / 2 = 5 > 3: the divided value is the deviation scored
    assert int(scorer.last_signal[0]) == RELATION
    assert scorer.last_z[0] == pytest.approx(5.0)
    assert score == pytest.approx(tail_by_hand(5.0))


def test_the_forecast_divisor_applies_to_the_forecast() -> None:
    scorer = scorer_for(config())
    score = one(scorer, residual=8.0, relation_z=3.0, scales=divisors(forecast=4.0))
    # forecast 8 / 4 = 2 < relation 3
    assert int(scorer.last_signal[0]) == RELATION
    assert scorer.last_z[0] == pytest.approx(3.0)
    assert score == pytest.approx(tail_by_hand(3.0))


def test_the_pooled_z_scale_divides_after_the_signal_divisor() -> None:
    scorer = scorer_for(config())
    score = one(scorer, residual=1.0, relation_z=12.0, scales=divisors(relation=2.0), z_scale=1.5)
    # 12 / 2 = 6 is last_z (the signal's divisor only); the score is of 6 / 1.5 = 4.
    assert scorer.last_z[0] == pytest.approx(6.0)
    assert score == pytest.approx(tail_by_hand(4.0))


def test_divisors_do_not_soften_a_certain_signal() -> None:
    scorer = AnomalyScorer(1, config(use_range=True))
    scorer.seed(0, UNIT_ABS, 0.0, 1.0, (0.0, 1.0), trained=True)
    huge = np.full(len(SIGNALS), 1e6)
    score = scorer.score(np.array([0]), np.array([50.0]), np.array([0.0]), signal_scales=huge)
    assert score[0] == 1.0
    assert int(scorer.last_signal[0]) == RANGE


def test_divisors_apply_per_row_of_a_batch() -> None:
    scorer = scorer_for(config(), slots=2)
    scorer.score(
        np.array([0, 1]),
        np.zeros(2),
        np.array([3.0, 1.0]),
        relation_z=np.array([10.0, 4.0]),
        signal_scales=divisors(relation=5.0),
    )
    # row 0: max(3, 10/5 = 2) = 3 forecast; row 1: max(1, 4/5 = 0.8) = 1 forecast
    assert scorer.last_z.tolist() == pytest.approx([3.0, 1.0])
    assert scorer.last_signal.tolist() == [FORECAST, FORECAST]


# -- record_parts ----------------------------------------------------------------------------


def test_record_parts_keeps_every_signal_undivided() -> None:
    scorer = scorer_for(config())
    scorer.record_parts = True
    one(scorer, residual=3.0, relation_z=-10.0, scales=divisors(forecast=3.0, relation=5.0))
    parts = scorer.last_parts
    assert parts.shape == (1, len(SIGNALS))
    assert parts[0, FORECAST] == pytest.approx(3.0)
    assert parts[0, RELATION] == pytest.approx(10.0)  # |z|, not divided by 5
    others = [k for k in range(len(SIGNALS)) if k not in (FORECAST, RELATION)]
    assert parts[0, others].tolist() == [0.0] * len(others)
    # last_z is the divided one: max(3/3, 10/5) = 2
    assert scorer.last_z[0] == pytest.approx(2.0)


def test_record_parts_off_leaves_last_parts_alone() -> None:
    scorer = scorer_for(config())
    one(scorer, residual=3.0, relation_z=10.0, scales=None)
    assert scorer.last_parts.shape == (0, len(SIGNALS))


def test_record_parts_of_a_learning_series_are_zero() -> None:
    cfg = config(learn_readings=5)
    scorer = AnomalyScorer(1, cfg)
    scorer.seed(0, UNIT_ABS, 0.0, 1.0, None, trained=False)  # a new series: learning
    scorer.record_parts = True
    one(scorer, residual=3.0, relation_z=10.0, scales=None)
    assert scorer.last_parts.tolist() == [[0.0] * len(SIGNALS)]
    assert scorer.last_z.tolist() == [0.0]


# -- the lasting signal of standardised deviations -------------------------------------------


def relation_parts(
    scorer: AnomalyScorer, zs: list[float], standardised: bool | None, signal: int
) -> list[float]:
    """The recorded `signal` part of each reading, the relation z and residual being the z
    itself (NaN: an unrelated reading)."""
    scorer.record_parts = True
    flags = None if standardised is None else np.array([standardised])
    out = []
    for z in zs:
        scorer.score(
            np.array([0]),
            np.array([0.0]),
            np.array([0.0]),
            relation_z=np.array([z]),
            relation_resid=np.array([z]),
            standardised=flags,
        )
        out.append(float(scorer.last_parts[0, signal]))
    return out


def lasting_run(
    zs: list[float], standardised: bool | None, short_window: int = 3, learn: int = 4
) -> list[float]:
    """The lasting part of each reading, the relation residual being the z itself."""
    scorer = scorer_for(config(short_window=short_window, learn_readings=learn))
    return relation_parts(scorer, zs, standardised, LASTING)


def test_standardised_lasting_is_the_recent_mean_times_root_n() -> None:
    zs = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.5]
    got = lasting_run(zs, standardised=True)
    root3 = math.sqrt(3.0)
    # 4 related readings learn (0); from the 5th on, |mean of the last 3| * sqrt(3)
    want = [0.0] * 4 + [
        (1 + 1 + 2) / 3 * root3,
        (1 + 2 + 2) / 3 * root3,
        2 * root3,
        (2 + 2 + 0.5) / 3 * root3,
    ]
    assert got == pytest.approx(want)


def test_standardised_lasting_averages_the_signed_deviation() -> None:
    # +3 -3 +3: the mean is 1 (not 3): opposite deviations cancel; then all -2: 2 * sqrt 3
    got = lasting_run([0.0, 0.0, 0.0, 0.0, 3.0, -3.0, 3.0, -2.0, -2.0, -2.0], standardised=True)
    root3 = math.sqrt(3.0)
    assert got[6] == pytest.approx(1.0 * root3)
    assert got[9] == pytest.approx(2.0 * root3)
    assert got[4] == pytest.approx(1.0 * root3)  # (0 + 0 + 3) / 3


def test_standardised_lasting_waits_for_related_readings_only() -> None:
    scorer = scorer_for(config(short_window=2, learn_readings=3))
    # NaN relation: an unrelated reading, which neither counts nor enters the mean.
    zs = [np.nan, 1.0, np.nan, 1.0, np.nan, 1.0, np.nan, 3.0]
    out = relation_parts(scorer, zs, True, LASTING)
    # Related readings 1, 2, 3 learn; the 4th (z = 3) is the first: |(1 + 3) / 2| * sqrt 2
    assert out[:7] == [0.0] * 7
    assert out[7] == pytest.approx(2.0 * math.sqrt(2.0))


def test_standardised_lasting_wins_when_the_deviation_lasts() -> None:
    scorer = scorer_for(config(short_window=4, learn_readings=0))
    for _ in range(4):
        scorer.score(
            np.array([0]),
            np.array([0.0]),
            np.array([0.0]),
            relation_z=np.array([2.5]),
            relation_resid=np.array([2.5]),
            standardised=np.array([True]),
        )
    # relation |z| = 2.5; lasting |mean 2.5| * sqrt 4 = 5
    assert int(scorer.last_signal[0]) == LASTING
    assert scorer.last_z[0] == pytest.approx(5.0)


def test_lasting_takes_its_own_divisor() -> None:
    scorer = scorer_for(config(short_window=4, learn_readings=0))
    # The sustained signal is not what this test is about.
    scales = divisors(lasting=4.0, sustained=100.0)
    for _ in range(4):
        scorer.score(
            np.array([0]),
            np.array([0.0]),
            np.array([0.0]),
            relation_z=np.array([2.5]),
            relation_resid=np.array([2.5]),
            signal_scales=scales,
            standardised=np.array([True]),
        )
    # lasting 5 / 4 = 1.25 < relation 2.5
    assert int(scorer.last_signal[0]) == RELATION
    assert scorer.last_z[0] == pytest.approx(2.5)


ZS = [0.3, -0.2, 0.5, 0.1, 1.5, 2.0, 2.5, 2.0, -1.0, 0.0, 3.0]


def test_rows_not_standardised_keep_the_learnt_long_run() -> None:
    learnt = lasting_run(ZS, standardised=None)
    assert lasting_run(ZS, standardised=False) == learnt
    assert learnt != lasting_run(ZS, standardised=True)


def learnt_long_run_by_hand(zs: list[float], short_window: int, learn: int) -> list[float]:
    """|z| of the recent mean against a running mean and variance of the recent means that
    learns as a running mean for `learn` readings, then exponentially (halflife 20000)."""
    alpha_hl = 1.0 - 0.5 ** (1.0 / 20_000)
    mean, var = 0.0, 1.0
    out = []
    for k in range(len(zs)):
        window = zs[max(0, k + 1 - short_window) : k + 1]
        recent = sum(window) / len(window)
        z = abs(recent - mean) / max(math.sqrt(var), 1e-4)
        out.append(z if k >= learn else 0.0)
        alpha = alpha_hl if k >= learn else max(alpha_hl, 1.0 / (k + 1.0))
        diff = recent - mean
        mean += alpha * diff
        var = (1.0 - alpha) * (var + diff * alpha * diff)
    return out


def test_the_learnt_long_run_by_hand() -> None:
    assert lasting_run(ZS, standardised=None) == pytest.approx(
        learnt_long_run_by_hand(ZS, short_window=3, learn=4), rel=1e-6
    )


def test_standardised_and_learnt_rows_in_one_batch() -> None:
    cfg = config(short_window=3, learn_readings=4)
    mixed = scorer_for(cfg, slots=2)
    mixed.record_parts = True
    got = []
    for z in ZS:
        mixed.score(
            np.array([0, 1]),
            np.zeros(2),
            np.zeros(2),
            relation_z=np.array([z, z]),
            relation_resid=np.array([z, z]),
            standardised=np.array([True, False]),
        )
        got.append(mixed.last_parts[:, LASTING].tolist())
    assert [g[0] for g in got] == pytest.approx(lasting_run(ZS, standardised=True))
    assert [g[1] for g in got] == pytest.approx(lasting_run(ZS, standardised=None))


# -- sustained: a device model's deviations averaged long, judged by their law under the model

SUSTAINED = SIGNALS.index("sustained")


def sustained_parts(zs: list[float], sustained_window: int, own: bool = True) -> list[float]:
    """Each reading's recorded sustained deviation for the device-model z's `zs`."""
    scorer = scorer_for(config(short_window=10, sustained_window=sustained_window))
    return relation_parts(scorer, zs, own, SUSTAINED)


def test_sustained_is_the_weighted_mean_against_its_spread() -> None:
    zs = [1.0, 1.0, -0.5, 2.0, 1.5]
    parts = sustained_parts(zs, sustained_window=9)
    a = 2.0 / 10.0  # an equivalent length of 9 readings
    mean = 0.0
    for k, z in enumerate(zs):
        mean += a * (z - mean)
        assert parts[k] == pytest.approx(abs(mean) / math.sqrt(a / (2.0 - a)), rel=1e-9)


def test_a_slow_creep_shows_in_sustained_more_than_in_lasting() -> None:
    """Deviations of 0.8 each: the mean of 10 is 0.8 * sqrt(10) = 2.5 sd, the weighted mean
    over 60 approaches 0.8 / 0.128 = 6.2 sd."""
    parts = sustained_parts([0.8] * 120, sustained_window=60)
    a = 2.0 / 61.0
    assert parts[-1] == pytest.approx(0.8 * (1 - (1 - a) ** 120) / math.sqrt(a / (2 - a)))
    assert parts[-1] > 0.8 * math.sqrt(10.0) * 2


def test_rows_not_standardised_have_no_sustained_deviation() -> None:
    assert sustained_parts([3.0] * 5, sustained_window=9, own=False) == [0.0] * 5
