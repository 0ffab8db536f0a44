"""Device relations: conditional residuals of a device's metrics, worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.engine.relations import DeviceRelations


def _model(cov: list[list[float]], mean: list[float] | None = None) -> DeviceRelations:
    """A device `d` whose metrics m0, m1, ... have the given (learnt) mean and covariance."""
    rel = DeviceRelations(halflife=1000, clip=6.0, learn=1)
    n = len(cov)
    for i in range(n):
        rel.attach("d", f"m{i}")
    row = int(rel.row_of[rel.ids["d"]])
    rel.cov[row, :n, :n] = cov
    rel.mean[row, :n] = mean or [0.0] * n
    rel.seen_count[row, :n] = 10
    return rel


def _observe(rel: DeviceRelations, x: list[float]) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    dev = np.full(n, rel.ids["d"])
    return rel.observe(dev, np.arange(n), np.zeros(n), np.array(x))


def test_two_metrics_conditional_residual_by_hand() -> None:
    rel = _model([[1.0, 0.9], [0.9, 1.0]])
    resid, z = _observe(rel, [2.0, 2.0])
    # With the 1e-3 ridge: var 1.001 each. m0 | m1 = 2: mean 0.9 / 1.001 * 2 = 1.79820,
    # variance 1.001 - 0.81 / 1.001 = 0.191811.
    assert resid[0] == pytest.approx(2.0 - 1.798202, abs=1e-5)
    assert z[0] == pytest.approx((2.0 - 1.798202) / math.sqrt(0.191811), abs=1e-4)
    assert z[1] == pytest.approx(z[0], abs=1e-9)  # symmetric covariance, same deviation


def test_a_move_the_relation_explains_is_small_and_one_it_does_not_is_large() -> None:
    rel = _model([[1.0, 0.99], [0.99, 1.0]])
    _, together = _observe(rel, [3.0, 3.0])
    rel2 = _model([[1.0, 0.99], [0.99, 1.0]])
    _, apart = _observe(rel2, [3.0, -3.0])
    assert abs(together[0]) < 1.0  # (3 - 0.989 * 3) / sqrt(0.0211) = 0.23
    assert abs(apart[0]) > 20.0  # (3 + 0.989 * 3) / sqrt(0.0211) = 41


def test_the_culprit_keeps_its_deviation_and_its_siblings_are_explained_away() -> None:
    cov = [[1.0, 0.8, 0.8], [0.8, 1.0, 0.8], [0.8, 0.8, 1.0]]
    _, z = _observe(_model(cov), [5.0, 0.0, 0.0])
    # m0 | m1, m2 = 0: mean 0, variance 1 - 2 * 0.64 / 1.8 = 0.2889 -> z = 5 / 0.5375 = 9.30
    # (ridge: within 0.05). m1 given m0 and m2 would be (0 - 2.22) / 0.5375 = -4.1; with
    # the culprit m0 left out, m1 | m2 = 0 has mean 0: z = 0.
    assert z[0] == pytest.approx(9.30, abs=0.05)
    assert abs(z[1]) < 1e-9 and abs(z[2]) < 1e-9


def test_a_single_present_metric_has_no_relation() -> None:
    rel = _model([[1.0, 0.5], [0.5, 1.0]])
    dev = np.array([rel.ids["d"]])
    resid, z = rel.observe(dev, np.array([0]), np.zeros(1), np.array([4.0]))
    assert np.isnan(resid[0]) and np.isnan(z[0])


def test_metrics_at_different_timestamps_do_not_relate() -> None:
    rel = _model([[1.0, 0.5], [0.5, 1.0]])
    dev = np.full(2, rel.ids["d"])
    _, z = rel.observe(dev, np.arange(2), np.array([1.0, 2.0]), np.array([4.0, -4.0]))
    assert np.isnan(z).all()


def test_learning_recovers_the_covariance_of_the_data() -> None:
    rng = np.random.default_rng(3)
    rel = DeviceRelations(halflife=1e9, clip=6.0, learn=10)
    rel.attach("d", "a")
    rel.attach("d", "b")
    dev = np.full(2, rel.ids["d"])
    data = rng.multivariate_normal([1.0, -2.0], [[4.0, 1.2], [1.2, 1.0]], size=4_000)
    for i, x in enumerate(data):
        rel.observe(dev, np.arange(2), np.full(2, float(i)), x)
    row = int(rel.row_of[rel.ids["d"]])
    assert rel.mean[row, :2] == pytest.approx([1.0, -2.0], abs=0.05)
    assert rel.cov[row, :2, :2] == pytest.approx(np.array([[4.0, 1.2], [1.2, 1.0]]), abs=0.3)


def test_state_survives_a_change_of_positions() -> None:
    rel = _model([[2.0, 0.5], [0.5, 3.0]], mean=[1.0, 2.0])
    d = rel.ids["d"]
    state = rel.slot_state(np.array([d, d]), np.array([0, 1]))
    # A fresh model where the metrics attach the other way round.
    other = DeviceRelations(halflife=1000, clip=6.0, learn=1)
    other.attach("d", "m1")
    other.attach("d", "m0")
    d2 = other.ids["d"]
    # Series order as in the state: m0 (now position 1), m1 (now position 0).
    other.restore_slots(np.array([d2, d2]), np.array([1, 0]), state)
    row = int(other.row_of[d2])
    assert other.mean[row, :2].tolist() == [2.0, 1.0]
    assert other.cov[row, :2, :2].tolist() == [[3.0, 0.5], [0.5, 2.0]]


def test_a_device_with_one_metric_takes_no_model_row() -> None:
    rel = DeviceRelations(halflife=1000, clip=6.0, learn=1)
    rel.attach("solo", "temp")
    assert rel.row_of[rel.ids["solo"]] == -1
    rel.attach("solo", "rpm")
    assert rel.row_of[rel.ids["solo"]] >= 0
