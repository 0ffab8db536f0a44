"""Scaling, the time-ordered split and sliding windows on small literal arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.windowing import (
    build_windows,
    min_readings,
    split_point,
    subsample,
    target_indices,
)

DAY = 86_400.0


def series_1_to_10() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ts = 1000.0 + 60.0 * np.arange(10)
    return {"d/m": (ts, np.arange(1.0, 11.0))}


def test_split_point_floors_and_survives_float_error() -> None:
    assert split_point(10, 0.8) == 8
    assert split_point(9, 0.8) == 7  # 7.2
    assert split_point(100, 0.29) == 29  # 0.29 * 100 is 28.999999999999996 in floating point
    assert split_point(3, 0.5) == 1


def test_target_indices_by_hand() -> None:
    train, val = target_indices(n=10, n_train=8, window_len=3)
    assert train.tolist() == [3, 4, 5, 6, 7]
    assert val.tolist() == [8, 9]
    # A window longer than the training part: no training targets, validation starts after it.
    train, val = target_indices(n=10, n_train=4, window_len=5)
    assert train.tolist() == [] and val.tolist() == [5, 6, 7, 8, 9]


def test_min_readings_is_the_first_length_with_both_windows() -> None:
    # window 3, split 0.8: n=5 -> 4 train (1 window), 1 val reading. n=4 -> 3 train: none.
    assert min_readings(3, 0.8) == 5
    # window 16, split 0.5: needs 17 training readings and one more for validation.
    assert min_readings(16, 0.5) == 34


def test_standard_scaling_uses_the_training_part_only() -> None:
    ws = build_windows(series_1_to_10(), window_len=3, split=0.8, method="standard")
    offset, scale = ws.scales["d/m"]
    # Training part 1..8: mean 4.5, population variance (3.5²+2.5²+1.5²+0.5²)*2/8 = 5.25.
    assert offset == pytest.approx(4.5)
    assert scale == pytest.approx(math.sqrt(5.25))
    assert ws.values[0] == pytest.approx((1 - 4.5) / math.sqrt(5.25))
    assert ws.values[9] == pytest.approx((10 - 4.5) / math.sqrt(5.25))


def test_minmax_windows_and_targets_by_hand() -> None:
    ws = build_windows(series_1_to_10(), window_len=3, split=0.8, method="minmax")
    assert ws.scales["d/m"] == (1.0, 7.0)  # min and range of 1..8
    assert ws.ranges["d/m"] == (1.0, 10.0)  # the range check sees validation readings too
    x = ws.inputs(ws.train_pos)
    assert x.shape == (5, 3, 1) and x.dtype == np.float32
    raw = x[..., 0] * 7.0 + 1.0
    np.testing.assert_allclose(raw, [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6], [5, 6, 7]])
    np.testing.assert_allclose(ws.targets(ws.train_pos) * 7 + 1, [4, 5, 6, 7, 8], rtol=1e-6)
    np.testing.assert_allclose(ws.inputs(ws.val_pos)[..., 0] * 7 + 1, [[6, 7, 8], [7, 8, 9]])
    np.testing.assert_allclose(ws.targets(ws.val_pos) * 7 + 1, [9, 10], rtol=1e-6)
    # Naive forecast: the last value of each window.
    np.testing.assert_allclose(ws.last_values(ws.val_pos) * 7 + 1, [8, 9], rtol=1e-6)


def test_series_are_pooled_with_their_own_scales_and_never_mixed_in_a_window() -> None:
    series = {
        "b/x": (np.arange(10.0), np.arange(10.0) * 100.0),
        "a/y": (np.arange(6.0), np.full(6, 7.0)),  # constant: scale 1, never divides by 0
    }
    ws = build_windows(series, window_len=2, split=0.5, method="standard")
    assert ws.keys == ["a/y", "b/x"]  # sorted, so runs are reproducible
    assert ws.scales["a/y"] == (7.0, 1.0)
    # a/y: 6 readings, 3 train -> train target 2, val targets 3,4,5 (flat 0..5).
    # b/x: 10 readings, 5 train -> train targets 2,3,4, val 5..9 (flat 6..15).
    assert ws.train_pos.tolist() == [2, 8, 9, 10]
    assert ws.val_pos.tolist() == [3, 4, 5, 11, 12, 13, 14, 15]
    for pos in np.concatenate([ws.train_pos, ws.val_pos]):
        window_ids = ws.series_id[pos - 2 : pos + 1]
        assert len(set(window_ids.tolist())) == 1


def test_validation_targets_are_later_than_all_training_targets_of_their_series() -> None:
    rng = np.random.default_rng(3)
    series = {}
    for i in range(4):
        n = int(rng.integers(30, 80))
        ts = np.cumsum(rng.uniform(1, 100, n))
        series[f"dev{i}/m"] = (ts, rng.normal(size=n))
    ws = build_windows(series, window_len=5, split=0.7, method="standard")
    for sid in range(len(ws.keys)):
        train_ts = ws.ts[ws.train_pos[ws.series_id[ws.train_pos] == sid]]
        val_ts = ws.ts[ws.val_pos[ws.series_id[ws.val_pos] == sid]]
        assert train_ts.size and val_ts.size
        assert val_ts.min() > train_ts.max()


def test_too_short_series_are_skipped_and_listed() -> None:
    series = series_1_to_10() | {"short/m": (np.arange(4.0), np.arange(4.0))}
    ws = build_windows(series, window_len=3, split=0.8, method="standard")
    assert ws.keys == ["d/m"] and ws.skipped == {"short/m": 4}


def test_time_features_come_from_the_window_timestamps() -> None:
    ts = np.arange(6) * (DAY / 4)  # 00:00, 06:00, 12:00, 18:00, 00:00, 06:00 on Thursdays
    series = {"d/m": (ts, np.arange(6.0))}
    ws = build_windows(
        series, 2, 0.9, "minmax", ("value", "tod_sin", "tod_cos", "dow_sin", "dow_cos")
    )
    x = ws.inputs(ws.train_pos[:1])  # window of readings 0 and 1
    assert x.shape == (1, 2, 5)
    np.testing.assert_allclose(x[0, :, 1], [0.0, 1.0], atol=1e-6)  # sin of 0 and a quarter day
    np.testing.assert_allclose(x[0, :, 2], [1.0, 0.0], atol=1e-6)


def test_subsample_is_seeded_sorted_and_capped() -> None:
    pos = np.arange(100, 200)
    a, b = subsample(pos, 10, seed=1), subsample(pos, 10, seed=1)
    assert a.tolist() == b.tolist() and a.size == 10 and len(set(a.tolist())) == 10
    assert np.all(np.diff(a) > 0) and set(a.tolist()) <= set(pos.tolist())
    assert subsample(pos, None, 0) is pos and subsample(pos, 500, 0) is pos


@pytest.mark.parametrize(("window", "split"), [(0, 0.8), (3, 1.0), (3, 0.0)])
def test_bad_window_or_split_is_refused(window: int, split: float) -> None:
    with pytest.raises(ValueError):
        build_windows(series_1_to_10(), window, split, "standard")
