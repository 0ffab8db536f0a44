"""The export check and file naming, without TensorFlow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.export import (
    ExportMismatchError,
    check_agreement,
    forecast_diff,
    tflite_file_names,
)
from training.models import resolve_units


def test_model_tflite_is_the_batch_64_file() -> None:
    assert tflite_file_names([64, 1]) == {1: "model_b1.tflite", 64: "model.tflite"}
    assert tflite_file_names([1, 64, 1024, 64]) == {
        1: "model_b1.tflite",
        64: "model.tflite",
        1024: "model_b1024.tflite",
    }
    # Without 64 the largest batch is the main file.
    assert tflite_file_names([1, 8]) == {1: "model_b1.tflite", 8: "model.tflite"}
    with pytest.raises(ValueError):
        tflite_file_names([])


def test_forecast_diff_is_absolute_near_zero_and_relative_far_out() -> None:
    # Within one scaled unit of 0: the plain difference.
    assert forecast_diff(np.array([0.2, -0.5, 1.0]), np.array([[0.2], [-0.25], [0.9]])) == 0.25
    # Beyond: relative to the reference forecast (0.5 off at 2.0 is 0.25; at 20.0 it is 0.025).
    assert forecast_diff(np.array([2.5, 20.5]), np.array([2.0, 20.0])) == 0.25
    assert forecast_diff(np.array([20.5]), np.array([20.0])) == pytest.approx(0.025)
    assert forecast_diff(np.array([]), np.array([])) == 0.0
    assert math.isinf(forecast_diff(np.array([np.nan]), np.array([0.0])))
    with pytest.raises(ValueError):
        forecast_diff(np.zeros(2), np.zeros(3))


def test_float32_rounding_far_from_the_training_range_passes_a_real_gap_fails() -> None:
    """The failure a large-valued NAB file hit: forecasts near 1500 scaled units, where one
    float32 step is 1.22e-4, differed by that one step (over the old absolute 1e-4)."""
    keras = np.array([0.3, 1500.0, 1500.25], dtype=np.float32)
    litert = np.nextafter(keras, np.float32(np.inf))  # one float32 step up everywhere
    assert np.abs(litert.astype(np.float64) - keras).max() == pytest.approx(2.0**-13)
    assert check_agreement({64: forecast_diff(litert, keras)}) < 1e-7
    # A real disagreement (0.5 scaled units on a forecast of 1500) still fails loudly, and
    # so does a small absolute one near 0.
    with pytest.raises(ExportMismatchError):
        check_agreement({64: forecast_diff(keras + np.float32(0.5), keras)})
    with pytest.raises(ExportMismatchError):
        check_agreement({64: forecast_diff(keras + np.float32(0.001), keras)})


def test_check_agreement_passes_small_and_fails_loudly_on_large() -> None:
    assert check_agreement({1: 1e-7, 64: 3e-5}) == 3e-5
    with pytest.raises(ExportMismatchError) as info:
        check_agreement({1: 1e-7, 64: 2e-3})
    message = str(info.value)
    assert "batch 64: 0.002" in message and "batch 1" not in message and "\n" not in message
    with pytest.raises(ExportMismatchError):
        check_agreement({64: float("inf")})
    with pytest.raises(ExportMismatchError):
        check_agreement({64: float("nan")})


def test_resolve_units() -> None:
    assert resolve_units((32,), 1) == (32,)
    assert resolve_units((32,), 3) == (32, 32, 32)
    assert resolve_units((32, 16), 1) == (32, 16)
    assert resolve_units((32, 16), 2) == (32, 16)
    for units, layers in [((32, 16), 3), ((0,), 1), ((), 1), ((8,), 0)]:
        with pytest.raises(ValueError):
            resolve_units(units, layers)


@pytest.mark.slow  # imports Keras (and so TensorFlow)
def test_every_cell_builds_with_the_asked_shapes() -> None:
    from training.models import ModelSpec, build_model

    for cell in ("lstm", "gru", "simplernn"):
        model = build_model(ModelSpec(8, 3, cell, (5, 4), bidirectional=cell == "simplernn"))
        assert tuple(model.input_shape) == (None, 8, 3)
        assert tuple(model.output_shape) == (None, 1)
    fixed = build_model(ModelSpec(8, 1, "lstm", (4,)), batch_size=64)
    assert tuple(fixed.input_shape) == (64, 8, 1)
