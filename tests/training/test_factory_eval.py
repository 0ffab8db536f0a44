"""The factory benchmark's forecast errors, pooling and naive baseline, on literal examples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from detector.sim.faults import Fault
from training.factory_eval import RunResult, forecast_rmse, naive_artifact
from training.factory_report import pooled_rmse
from training.factory_scenario import SHAPES, Block, Scenario


def _run(readings: int, model: float, naive: float, seasonal: float) -> RunResult:
    row = {"readings": readings, "model": model, "naive": naive, "seasonal_naive": seasonal}
    return RunResult("s", 0, "lstm", [], [], [], [], 1, 1.0, {"pooled": row, "per_metric": {}})


def test_pooled_rmse_pools_squared_errors() -> None:
    runs = [_run(100, 1.0, 2.0, 4.0), _run(300, 3.0, 2.0, 4.0), _run(0, 9.0, 9.0, 9.0)]
    failed = RunResult("s", 1, "lstm", [], [], [], [], 1, 1.0, None, error="boom")
    got = pooled_rmse([*runs, failed])
    # sqrt((100 * 1 + 300 * 9) / 400) = sqrt(7)
    assert got["readings"] == 400 and got["model"] == pytest.approx(math.sqrt(7))
    assert got["naive"] == pytest.approx(2.0) and got["seasonal_naive"] == pytest.approx(4.0)
    assert got["ratio_vs_naive"] == pytest.approx(math.sqrt(7) / 2)


def _block(ts: list[float], values: list[float], present: list[bool]) -> Block:
    n = len(ts)
    return Block(
        np.array(ts),
        np.array(values, dtype=float).reshape(n, 1, 1),
        np.array(present).reshape(n, 1),
        np.ones((n, 1), dtype=bool),
        np.ones((n, 1)),
    )


def _scenario(faults: list[Fault], stream_present: list[bool] | None = None) -> Scenario:
    # Six-hourly readings: "a day ago" is 4 readings back. History 0,2,0,2,... (mean 1,
    # std 1, so errors are in raw units); the stream reads 0, 2, 0, 4.
    step = 21_600.0
    history = _block([k * step for k in range(8)], [0, 2] * 4, [True] * 8)
    stream = _block([k * step for k in range(8, 12)], [0, 2, 0, 4], stream_present or [True] * 4)
    return Scenario(SHAPES["small"], 0, step, ("a",), ("x",), history, stream, faults)


def test_forecast_rmse_against_naive_and_seasonal_naive() -> None:
    expected = np.array([0.5, 2.0, 1.0, 4.0]).reshape(4, 1, 1)
    got = forecast_rmse(_scenario([]), expected)["pooled"]
    # model errors -0.5, 0, -1, 0; naive (last reading 2, 0, 2, 0) -2, 2, -2, 4;
    # seasonal (a day ago: 0, 2, 0, 2) 0, 0, 0, 2.
    assert got["readings"] == 4
    assert got["model"] == pytest.approx(math.sqrt(1.25 / 4))
    assert got["naive"] == pytest.approx(math.sqrt(7))
    assert got["seasonal_naive"] == pytest.approx(1.0)
    assert got["ratio_vs_seasonal"] == pytest.approx(math.sqrt(1.25 / 4))


def test_forecast_rmse_leaves_out_faulty_and_missing_readings() -> None:
    expected = np.array([0.5, 2.0, 1.0, 4.0]).reshape(4, 1, 1)
    fault = Fault("spike", "a", "x", 11 * 21_600.0, 11 * 21_600.0 + 1, 5.0)
    got = forecast_rmse(_scenario([fault]), expected)["pooled"]
    # the last reading is faulty: model -0.5, 0, -1; naive -2, 2, -2; seasonal 0, 0, 0
    assert got["readings"] == 3 and got["model"] == pytest.approx(math.sqrt(1.25 / 3))
    assert got["naive"] == pytest.approx(2.0) and got["ratio_vs_seasonal"] is None
    # The second stream reading never came: the third is forecast from the first (0).
    nan = np.array([0.5, np.nan, 1.0, 4.0]).reshape(4, 1, 1)
    got = forecast_rmse(_scenario([], [True, False, True, True]), nan)["pooled"]
    # model -0.5, -1, 0; naive (2, 0, 0) -2, 0, 4; seasonal (0, 0, 2) 0, 0, 2
    assert got["readings"] == 3
    assert got["naive"] == pytest.approx(math.sqrt(20 / 3))
    assert got["seasonal_naive"] == pytest.approx(math.sqrt(4 / 3))


def test_naive_artifact_is_calibrated_on_the_last_fifth_of_the_history(tmp_path: Path) -> None:
    ts = np.arange(10, dtype=float) * 60
    artifact = naive_artifact({"a/x": (ts, np.arange(10, dtype=float))}, tmp_path)
    # First 8 readings 0..7: mean 3.5, population std sqrt(5.25). Validation targets 8 and 9
    # are each one step of 1 / sqrt(5.25) above the last value.
    scale = artifact.scale_for("a/x")
    assert scale is not None
    assert (scale.offset, scale.scale) == pytest.approx((3.5, math.sqrt(5.25)))
    assert (scale.low, scale.high) == (0.0, 9.0)
    errors = artifact.errors_for("a/x")
    assert (errors.mean, errors.std, errors.n) == pytest.approx((1 / math.sqrt(5.25), 0.0, 2))
    assert artifact.window_len == 1
