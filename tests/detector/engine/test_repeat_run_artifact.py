"""An artifact's per-series `repeat_run` (the longest run of repeats in the training data):
what the reader accepts, and that a fresh core takes it as the run a flatline must beat."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.engine.artifact import SCHEMA_VERSION, ArtifactError, parse_artifact
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from detector.engine.scoring import NO_RUN_YET, SIGNALS
from tests.detector.core_fixtures import LastValueForecaster
from tests.detector.engine.test_artifact import valid_doc

FLATLINE = SIGNALS.index("flatline")


def doc_with_run(run: Any) -> dict[str, Any]:
    doc = copy.deepcopy(valid_doc())
    doc["scaling"]["per_series"]["press1/temp"]["repeat_run"] = run
    return doc


@pytest.mark.parametrize("run", [0, 1, 7, 10_000])
def test_a_non_negative_integer_is_read(tmp_path: Path, run: int) -> None:
    art = parse_artifact(doc_with_run(run), tmp_path)
    assert art.series_scales["press1/temp"].repeat_run == run


def test_null_or_absent_is_none(tmp_path: Path) -> None:
    art = parse_artifact(doc_with_run(None), tmp_path)
    assert art.series_scales["press1/temp"].repeat_run is None
    assert parse_artifact(valid_doc(), tmp_path).series_scales["press1/temp"].repeat_run is None


@pytest.mark.parametrize("run", [-1, True, False, 3.0, 2.5, "3", [3], {"n": 3}])
def test_anything_else_is_refused(tmp_path: Path, run: Any) -> None:
    with pytest.raises(ArtifactError, match=r"press1/temp\]\.repeat_run"):
        parse_artifact(doc_with_run(run), tmp_path)


# -- in the core ------------------------------------------------------------------------------

KEY = "m1/temp"
WINDOW = 3
RUN = 5


def artifact(repeat_run: int | None, version: str = "test-model"):  # type: ignore[no-untyped-def]
    scale: dict[str, Any] = {"offset": 0.0, "scale": 1.0, "low": -100.0, "high": 100.0}
    scale["repeat_run"] = repeat_run
    err = {"mean": 0.0, "std": 1.0, "abs_quantiles": {}, "n": 100}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "version": version,
        "created_at": "2026-11-28T00:00:00Z",
        "code_version": "iotad test",
        "model": {"cell": "lstm", "units": [4], "layers": 1, "bidirectional": False},
        "window_len": WINDOW,
        "horizon": 1,
        "features": ["value"],
        "scaling": {
            "method": "standard",
            "per_series": {KEY: scale},
            "default": {"offset": 0.0, "scale": 1.0},
        },
        "calibration": {"per_series": {KEY: err}, "global": err},
        "files": {"keras": "model.keras", "tflite": {"1": "model_b1.tflite"}},
    }
    return parse_artifact(doc, Path("/nonexistent"))


def core_for(repeat_run: int | None, version: str = "test-model") -> DetectionCore:
    cfg = DetectionConfig(
        use_level=False, use_range=False, flatline_min=3, quiet_period=0, resolve_after=2
    )
    return DetectionCore(artifact(repeat_run, version), LastValueForecaster(), cfg)


def feed(core: DetectionCore, values: list[float]) -> list[tuple[float, bool, int]]:
    """One reading per call; each scored reading's (score, flag, signal)."""
    out = []
    for i, v in enumerate(values):
        res = core.process([Reading("m1", "temp", 1000.0 + 60.0 * i, v)], now=1e9)
        if res.scored:
            sc = core.scorer
            out.append((res.scored[0].score, bool(sc.last_flag[0]), int(sc.last_signal[0])))
    return out


# 12 readings that never repeat (cycling 0 1 2), then 7 then RUN + 3 repeats of it.
CYCLE = [float(i % 3) for i in range(12)]
STOP = [7.0] * (1 + RUN + 3)


def test_the_run_seeds_the_longest_run_at_allocation() -> None:
    core = core_for(RUN)
    core.process([Reading("m1", "temp", 1000.0, 1.0)], now=1e9)
    slot = core.store.slot(KEY)
    assert slot is not None
    assert int(core.scorer.longest_repeat_count[slot]) == RUN
    plain = core_for(None)
    plain.process([Reading("m1", "temp", 1000.0, 1.0)], now=1e9)
    assert int(plain.scorer.longest_repeat_count[plain.store.slot(KEY)]) == NO_RUN_YET


def test_a_run_as_long_as_the_trained_one_is_not_a_flatline() -> None:
    got = feed(core_for(RUN), CYCLE + STOP)
    stop = got[len(CYCLE) - WINDOW :]  # the first reading of 7, then its repeats
    flags = [flag for _, flag, _ in stop]
    # repeats 1..RUN: no flag; RUN + 1 on: longer than any run the series had: flatline
    assert flags == [False] * (1 + RUN) + [True] * 3
    assert max(s for s, _, _ in stop[: 1 + RUN]) < 0.5
    assert [(s, sig) for s, _, sig in stop[1 + RUN :]] == [(1.0, FLATLINE)] * 3


def test_without_the_trained_run_the_same_stop_is_a_flatline_at_flatline_min() -> None:
    got = feed(core_for(None), CYCLE + STOP)
    stop = got[len(CYCLE) - WINDOW :]
    flags = [flag for _, flag, _ in stop]
    # The cycle never repeated (its longest run is 0): the 3rd repeat is flatline_min.
    assert flags == [False, False, False] + [True] * (RUN + 1)


def test_a_zero_run_means_any_run_of_flatline_min_is_news() -> None:
    got = feed(core_for(0), CYCLE + STOP)
    stop = got[len(CYCLE) - WINDOW :]
    assert [flag for _, flag, _ in stop] == [False, False, False] + [True] * (RUN + 1)


def test_the_trained_run_matters_before_the_series_first_changes() -> None:
    # A fresh core whose series starts stopped: without a trained run nothing can be stuck
    # (no run to compare with); with one, a stop longer than it is.
    values = [7.0] * (WINDOW + RUN + 3)
    plain = feed(core_for(None), values)
    assert not any(flag for _, flag, _ in plain)
    seeded = feed(core_for(RUN), values)
    flags = [flag for _, flag, _ in seeded]
    # The scorer counts the repeats it scores: the first scored reading (the window full of
    # 7s before it) is run 1, so run RUN + 1 is the first longer than the trained run.
    runs = range(1, len(flags) + 1)
    assert flags == [run > RUN for run in runs]
    assert np.count_nonzero(flags) == len(flags) - RUN


def test_a_checkpoint_of_the_same_model_keeps_the_seeded_run() -> None:
    core = core_for(RUN)
    feed(core, [7.0] * (WINDOW + 2))  # stopped from the start: only the seed is known
    restored = core_for(RUN)
    restored.restore(core.snapshot())
    slot = restored.store.slot(KEY)
    assert slot is not None
    assert int(restored.scorer.longest_repeat_count[slot]) == RUN
    assert int(restored.scorer.repeat_count[slot]) == 2


def test_a_checkpoint_that_never_saw_the_run_does_not_erase_the_artifacts() -> None:
    # A core without the artifact's run (an older model) saved a series that never changed:
    # restored into a core whose artifact knows RUN, the series keeps RUN.
    old = core_for(None, "older-model")
    feed(old, [7.0] * (WINDOW + 2))
    restored = core_for(RUN)
    restored.restore(old.snapshot())
    slot = restored.store.slot(KEY)
    assert slot is not None
    assert int(restored.scorer.longest_repeat_count[slot]) == RUN


def test_a_checkpoint_that_saw_a_longer_run_keeps_it() -> None:
    old = core_for(RUN + 4, "older-model")
    feed(old, [7.0] * (WINDOW + 2))
    restored = core_for(RUN)
    restored.restore(old.snapshot())
    slot = restored.store.slot(KEY)
    assert slot is not None
    assert int(restored.scorer.longest_repeat_count[slot]) == RUN + 4
