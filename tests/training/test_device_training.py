"""Training the device models: signatures, alignment, training rows (fast), and one small
fit on a synthetic fleet where one metric lags another (slow: imports Keras)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.engine.device_model import load_device_model
from training.device_training import (
    DeviceData,
    DeviceTrainConfig,
    device_data,
    rows,
    signatures,
    train_device_models,
)

STEP = 60.0

# -- signatures, alignment and rows (no Keras) --------------------------------------------------


def test_signatures_group_devices_by_sorted_metric_names() -> None:
    keys = [
        "m2/vibration",
        "m1/temperature",
        "m1/current",
        "m2/current",
        "m2/temperature",
        "m3/temperature",
        "m3/current",
        "solo/temperature",  # one metric: no device model
        "noslash",  # not a device/metric key
        "empty/",  # no metric name
    ]
    assert signatures(keys) == {
        ("current", "temperature"): ["m1", "m3"],
        ("current", "temperature", "vibration"): ["m2"],
    }


def test_signatures_leave_out_devices_with_more_than_eight_metrics() -> None:
    nine = [f"big/m{i}" for i in range(9)]
    eight = [f"ok/m{i}" for i in range(8)]
    assert signatures(nine + eight) == {tuple(f"m{i}" for i in range(8)): ["ok"]}


def test_device_data_aligns_on_shared_timestamps_scales_and_cuts_training() -> None:
    ts = np.arange(10) * STEP
    series = {
        "d/a": (ts, np.arange(10.0)),
        "d/b": (np.delete(ts, [3, 7]), np.delete(100.0 + np.arange(10.0), [3, 7])),
    }
    scales = {"d/a": (1.0, 2.0), "d/b": (100.0, 4.0)}
    # a trains on its first 6 readings (ts 0..5), b on its first 7 (ts 0,1,2,4,5,6,8): the
    # earlier end (ts 5) bounds the device's training part.
    n_train = {"d/a": 6, "d/b": 7}
    data = device_data(series, scales, n_train, ("a", "b"), ["d", "unknown"])
    assert data.devices == ["d"]
    kept = np.array([0, 1, 2, 4, 5, 6, 8, 9], float)
    np.testing.assert_allclose(data.values[0][:, 0], (kept - 1.0) / 2.0)
    np.testing.assert_allclose(data.values[0][:, 1], kept / 4.0)
    assert data.n_train == [5]  # ts 0, 1, 2, 4, 5


def _data() -> DeviceData:
    values = np.array([[10.0 * t, 1000.0 + t, -t] for t in range(8)])  # (T=8, M=3)
    return DeviceData(("a", "b", "c"), ["d"], [values], [6])


def test_validation_rows_are_every_metric_with_every_sibling_visible() -> None:
    (past, head), y, naive = rows(_data(), 2, False, None, 0.5, 0)
    # Validation targets are positions 6 and 7, each judged once per metric.
    assert past.shape == (6, 2, 3) and head.shape == (6, 9)
    np.testing.assert_array_equal(past[0], [[40.0, 1004.0, -4.0], [50.0, 1005.0, -5.0]])
    np.testing.assert_array_equal(past[3], [[50.0, 1005.0, -5.0], [60.0, 1006.0, -6.0]])
    # Row 1: position 6, metric b judged: its reading now zeroed, a and c visible.
    np.testing.assert_array_equal(head[1], [60.0, 0.0, -6.0, 0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(y, [10.0, 1.0, -1.0] * 2)
    np.testing.assert_allclose(naive, y)


def test_training_rows_hide_one_sibling_in_the_past_and_now() -> None:
    data = _data()
    (past, head), y, _ = rows(data, 2, True, 400, 0.5, 3)
    values = data.values[0]
    hidden_rows = 0
    for r in range(400):
        onehot = head[r, 3:6]
        visible = head[r, 6:9]
        target = int(np.argmax(onehot))
        assert onehot.sum() == 1
        assert visible[target] == 0
        hidden = [j for j in range(3) if j != target and visible[j] == 0]
        assert len(hidden) <= 1
        hidden_rows += len(hidden)
        # Identify the position from the judged metric's change (a and b are distinct per t).
        pos = next(
            p for p in range(2, 6) if np.allclose(past[r, -1, target], values[p - 1, target])
        )
        want_past = values[pos - 2 : pos].copy()
        want_past[:, hidden] = 0.0
        np.testing.assert_array_equal(past[r], want_past)
        np.testing.assert_array_equal(head[r, :3], values[pos] * visible)
        assert y[r] == pytest.approx(values[pos, target] - values[pos - 1, target])
    assert 120 < hidden_rows < 280  # about half of 400 rows hide one sibling


def _step_data() -> DeviceData:
    """A device that sits still except for one step of its metric a between positions 4
    and 5, and one of b between 8 and 9 (positions 2..9 are training targets)."""
    values = np.zeros((12, 2))
    values[5:, 0] = 3.0
    values[9:, 1] = -2.0
    return DeviceData(("a", "b"), ["d"], [values], [10])


def test_moved_before_is_the_devices_last_step_before_the_reading() -> None:
    from training.device_training import moved_before

    pairs = np.array([[0, p] for p in range(2, 10)])
    # Position p sees the step from p - 2 to p - 1: a's step (5) at p = 6, b's (9) at none
    # of these; p = 9 forecasts b's step but its input has not moved.
    assert moved_before(_step_data(), pairs).tolist() == [0, 0, 0, 0, 3.0, 0, 0, 0]


def test_transition_rows_are_drawn_where_the_device_moved_in_its_inputs() -> None:
    (past, _), y, _ = rows(_step_data(), 2, True, 50, 0.0, 1, transition_share=1.0)
    # Every row is position 6: a moved from 0 to 3 between its last two inputs.
    np.testing.assert_array_equal(past[:, :, 0], np.tile([0.0, 3.0], (50, 1)))
    np.testing.assert_array_equal(y, np.zeros(50))  # the change forecast is not what drew it


def test_transition_share_draws_that_share_and_the_rest_uniformly() -> None:
    (past, _), _, _ = rows(_step_data(), 2, True, 400, 0.0, 2, transition_share=0.5)
    at_step = int(np.sum((past[:, 0, 0] == 0.0) & (past[:, 1, 0] == 3.0)))
    # 200 drawn at the step, and about 1 in 8 of the 200 uniform ones (positions 2..9).
    assert 200 + 10 <= at_step <= 200 + 45


def test_a_device_that_never_moved_is_drawn_uniformly() -> None:
    still = DeviceData(("a", "b"), ["d"], [np.zeros((12, 2))], [10])
    plain = rows(still, 2, True, 64, 0.3, 5)
    weighted = rows(still, 2, True, 64, 0.3, 5, transition_share=0.5)
    for want, got in zip(plain[0], weighted[0], strict=True):
        np.testing.assert_array_equal(got, want)


# -- one small fit (Keras) ----------------------------------------------------------------------


def lagged_fleet(
    n_devices: int = 4, n: int = 1500, seed: int = 0
) -> tuple[
    dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[float, float]], dict[str, int]
]:
    """Devices whose `b` is their `a` two readings ago: b's change is a's change two steps
    back, in the window; a's own change is noise. One single-metric device besides."""
    rng = np.random.default_rng(seed)
    series, scales, n_train = {}, {}, {}
    ts = 1.7e9 + STEP * np.arange(n)
    for d in range(n_devices):
        a = np.zeros(n + 2)
        for t in range(1, n + 2):
            a[t] = 0.97 * a[t - 1] + rng.normal()
        b = 3.0 * a[:-2] + 50.0 + 0.05 * rng.normal(size=n)
        series[f"m{d}/a"] = (ts, a[2:])
        series[f"m{d}/b"] = (ts, b)
        scales[f"m{d}/a"] = (0.0, float(np.std(a)))
        scales[f"m{d}/b"] = (50.0, float(np.std(b)))
    series["solo/a"] = (ts, rng.normal(size=n))
    scales["solo/a"] = (0.0, 1.0)
    for key in series:
        n_train[key] = int(0.8 * n)
    return series, scales, n_train


@pytest.mark.slow  # imports Keras (and so TensorFlow)
def test_train_device_models_writes_a_model_that_beats_naive(tmp_path: Path) -> None:
    series, scales, n_train = lagged_fleet()
    cfg = DeviceTrainConfig(
        window=4, units=16, head=(16,), epochs=8, max_rows=12000, batch_size=128, lr=1e-2
    )
    lines: list[str] = []
    entries, reports, deviations = train_device_models(
        series, scales, n_train, cfg, tmp_path, lines.append
    )
    assert entries == [{"metrics": ["a", "b"], "window": 4, "units": 16, "file": "device_0.npz"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device_0.npz"]
    model = load_device_model(tmp_path / "device_0.npz", ("a", "b"), 4)
    assert model.units == 16 and len(model.dense) == 2

    (report,) = reports
    assert report["devices"] == 4
    assert report["metrics"] == ["a", "b"]
    assert report["numpy_keras_max_diff"] <= 1e-3
    assert report["rmse_vs_naive"] < 1.0
    # b follows a two readings back: the window holds its change.
    assert report["rmse_vs_naive_per_metric"]["b"] < 0.6
    # The validation part: the last 20% of each device's two series (all aligned).
    assert report["validation_readings"] == 4 * 300 * 2
    assert sorted(deviations) == [f"m{d}/{m}" for d in range(4) for m in "ab"]
    assert all(v.shape == (300,) and np.all(np.isfinite(v)) for v in deviations.values())
    assert any("device model a+b" in line for line in lines)


@pytest.mark.slow
def test_a_signature_with_too_little_history_gets_no_model(tmp_path: Path) -> None:
    series, scales, n_train = lagged_fleet(n_devices=1, n=200)
    lines: list[str] = []
    entries, reports, deviations = train_device_models(
        series, scales, n_train, DeviceTrainConfig(window=4, min_rows=500), tmp_path, lines.append
    )
    assert (entries, reports, deviations) == ([], [], {})
    assert list(tmp_path.iterdir()) == []
    assert any("too few" in line for line in lines)
