"""Recorded forecasts and the multi-file replay: exactly what each file's own replay gives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from training import nab_grid
from training.nab_forecasts import (
    CachedForecaster,
    CacheMiss,
    ForecastTable,
    RecordingForecaster,
    disjoint_groups,
)
from training.nab_multi import FittedFile, MultiReplay, Variant, period_for
from training.nab_replay import (
    LastValueForecaster,
    ReplayConfig,
    naive_artifact,
    replay_fitted,
    series_names,
)

STEP_S = 300.0


class Damped:
    """Not the naive forecast: 0.8 of the last value plus 0.1 of the window's mean."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, windows: np.ndarray) -> np.ndarray:
        self.calls += 1
        return (0.8 * windows[:, -1, 0] + 0.1 * windows[:, :, 0].mean(axis=1)).astype(np.float32)


def wave(n: int, seed: int, period: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    values = 20 + 5 * np.sin(2 * np.pi * i / period) + rng.normal(0, 0.5, n)
    values[[n // 2, n // 2 + 97]] += 12
    values[n - 300 : n - 150] = values[n - 301]  # a stuck stretch for the flatline signal
    return 1.4e9 + i * STEP_S, values


def fitted(name: str, n: int, seed: int, period: int, record: bool) -> tuple[FittedFile, Damped]:
    ts, values = wave(n, seed, period)
    history = 225
    key = "/".join(series_names(name))
    artifact = naive_artifact(key, values[:history], Path("."))
    table = None
    if record:
        recorder = RecordingForecaster(Damped())
        replay_fitted(name, ts, values, history, artifact, recorder, ReplayConfig(chunk_rows=64))
        table = recorder.table()
    return FittedFile(name, ts, values, history, artifact, table), Damped()


def own_replay(f: FittedFile, variant: Variant, forecaster) -> np.ndarray:
    """The file alone through `replay_fitted`, with the variant's settings and period."""
    key = f.key
    scale = dataclasses.replace(
        f.artifact.scale_for(key), period=period_for(f, variant.min_autocorrelation)
    )
    artifact = dataclasses.replace(f.artifact, series_scales={key: scale})
    cfg = ReplayConfig(detection=variant.detection, chunk_rows=64)
    return replay_fitted(
        f.name, f.ts, f.values, f.history_rows, artifact, forecaster, cfg
    ).anomaly_score


VARIANTS = [
    nab_grid.DEFAULT,
    nab_grid.variant(seasonal=None),
    nab_grid.variant(seasonal=0.5),
    nab_grid.variant(flatline_min=0, range_tolerance="off"),
]


@pytest.mark.parametrize("record", [True, False], ids=["recorded", "naive"])
def test_many_files_in_one_core_score_exactly_as_each_alone(record: bool) -> None:
    files = [
        fitted("a/one.csv", 1000, 1, 96, record),
        fitted("b/two.csv", 800, 2, 50, record),
        fitted("b/three.csv", 700, 3, 120, record),
    ]
    replay = MultiReplay([f for f, _ in files], chunk_rows=64)
    got = replay.scores(VARIANTS)
    for variant in VARIANTS:
        for f, model in files:
            forecaster = model if record else LastValueForecaster()
            want = own_replay(f, variant, forecaster)
            assert np.array_equal(got[variant.name][f.name], want), (variant.name, f.name)
    # The variants differ (the test would pass vacuously otherwise).
    assert not np.array_equal(got["default"]["a/one.csv"], got["seasonal=off"]["a/one.csv"])


def test_a_failed_file_scores_zero_everywhere_and_is_named() -> None:
    good, _ = fitted("a/one.csv", 900, 1, 96, record=False)
    ts, values = wave(700, 4, 60)
    bad = FittedFile("a/bad.csv", ts, values, 105, None, error="ExportMismatchError: boom")
    replay = MultiReplay([good, bad], chunk_rows=64)
    scores = replay.scores([nab_grid.DEFAULT])["default"]
    assert np.array_equal(scores["a/bad.csv"], np.zeros(700))
    assert scores["a/one.csv"].max() > 0
    assert replay.failed == {"a/bad.csv": "ExportMismatchError: boom"}


def test_cached_forecasts_play_back_in_order_and_refuse_the_unknown(tmp_path: Path) -> None:
    w = np.array([[[1.0]], [[2.0]], [[1.0]]], dtype=np.float32)
    table = ForecastTable(w, np.array([10.0, 20.0, 11.0], dtype=np.float32))
    table.save(tmp_path / "t.npz")
    cached = CachedForecaster([ForecastTable.load(tmp_path / "t.npz")])
    # The second request for window [1] gets the second forecast recorded for it.
    assert cached.predict(w).tolist() == [10.0, 20.0, 11.0]
    assert cached.predict(w[:1]).tolist() == [11.0]  # past the recorded ones: the last
    cached.rewind(copies=2)  # two series per file, in lockstep
    assert cached.predict(w[[0, 0, 1, 1, 2, 2]]).tolist() == [10, 10, 20, 20, 11, 11]
    with pytest.raises(CacheMiss):
        cached.predict(np.array([[[3.0]]], dtype=np.float32))


def test_files_sharing_a_window_replay_in_separate_groups() -> None:
    one = ForecastTable(np.array([[[1.0]], [[2.0]]], np.float32), np.zeros(2, np.float32))
    two = ForecastTable(np.array([[[2.0]]], np.float32), np.ones(1, np.float32))
    three = ForecastTable(np.array([[[3.0]]], np.float32), np.ones(1, np.float32))
    assert disjoint_groups({"a": one, "b": two, "c": three}) == [["a", "c"], ["b"]]
