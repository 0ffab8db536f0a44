"""How the forecaster cuts a drain into LiteRT calls of the exported batch sizes."""

from __future__ import annotations

import numpy as np
import pytest

from detector.engine.forecaster import LiteRTForecaster


class FixedBatchRunner:
    """Stands in for one fixed-batch LiteRT interpreter: refuses any other batch size and
    forecasts each window's last value plus the batch size (so a test sees which ran)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.calls = 0

    def run(self, windows: np.ndarray) -> np.ndarray:
        assert windows.shape[0] == self.batch
        self.calls += 1
        return windows[:, -1, 0] + self.batch


def forecaster(*sizes: int) -> tuple[LiteRTForecaster, dict[int, FixedBatchRunner]]:
    runners = {b: FixedBatchRunner(b) for b in sizes}
    return LiteRTForecaster(runners, window_len=4, n_features=1), runners


@pytest.mark.parametrize(
    ("n", "calls"),
    [
        (1, {1: 1}),
        (2, {8: 1}),
        (8, {8: 1}),
        (9, {64: 1}),
        (64, {64: 1}),
        (65, {64: 1, 1: 1}),
        (70, {64: 1, 8: 1}),
        (200, {64: 3, 8: 1}),  # 3 full and 8 rows in a padded 8
    ],
)
def test_a_drain_is_full_batches_plus_one_padded_call(n: int, calls: dict[int, int]) -> None:
    fc, runners = forecaster(1, 8, 64)
    windows = np.arange(n * 4, dtype=np.float32).reshape(n, 4, 1)
    out = fc.predict(windows)
    assert {b: r.calls for b, r in runners.items() if r.calls} == calls
    # Every row's forecast came back in its own place, padding dropped.
    assert out.shape == (n,)
    assert np.all((out - windows[:, -1, 0]) > 0)


def test_without_small_exports_a_small_drain_pads_to_the_large_batch() -> None:
    fc, runners = forecaster(64)
    out = fc.predict(np.ones((3, 4, 1), dtype=np.float32))
    assert runners[64].calls == 1
    assert out.tolist() == [65.0, 65.0, 65.0]
