"""Carrying the detection state over to another model version (`detector.engine.model_carry`):
what a series keeps, what it takes from the new artifact, and that nothing goes cold."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.engine.artifact import Artifact, SeriesScale
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.model_carry import carry_over
from detector.engine.readings import Reading
from detector.worker.checkpoint import Checkpointer
from tests.detector.core_fixtures import LastValueForecaster, make_artifact

CFG = DetectionConfig(resolve_after=3, quiet_period=5, error_halflife=20, learn_readings=5)
SERIES = ("m1/temp", "m1/rpm", "m2/temp")
T0 = 1_700_000_000.0


def readings(start: int, stop: int) -> list[Reading]:
    rng = random.Random(start)
    out = []
    for i in range(start, stop):
        for k, key in enumerate(SERIES):
            device, metric = key.split("/")
            value = 10.0 * k + math.sin(i / 4 + k) + rng.gauss(0, 0.1)
            out.append(Reading(device, metric, T0 + 60.0 * i, value))
    return out


def artifact(
    version: str,
    window_len: int = 4,
    scale: SeriesScale | None = None,
    error_std: float = 0.3,
) -> Artifact:
    art = make_artifact(
        window_len=window_len,
        per_series={"m1/temp": (0.0, 2.0)},
        errors={"m1/temp": (0.0, error_std)},
    )
    scales = {"m1/temp": scale or SeriesScale(0.0, 2.0)}
    return dataclasses.replace(art, version=version, series_scales=scales)


def core_of(art: Artifact) -> DetectionCore:
    return DetectionCore(art, LastValueForecaster(), CFG)


def warmed(n: int = 40) -> DetectionCore:
    core = core_of(artifact("v1"))
    core.process(readings(0, n), now=T0 + 60.0 * n)
    return core


def test_series_the_new_model_does_not_know_score_as_if_nothing_changed() -> None:
    old = warmed()
    new = core_of(artifact("v2"))
    assert new.restore(old.snapshot()) == 3
    assert new.last_carry is not None and new.last_carry.from_version == "v1"
    later = readings(40, 60)
    kept = old.process(later, now=T0 + 3600 * 2)
    swapped = new.process(later, now=T0 + 3600 * 2)
    # No cold start: every reading is scored at once (windows carried over).
    assert swapped.warming == 0 and len(swapped.scored) == len(later)
    for a, b in zip(kept.scored, swapped.scored, strict=True):
        if a.reading.key != "m1/temp":  # not in the artifact: every statistic kept
            assert a.score == b.score and a.expected == b.expected


def test_a_known_series_takes_the_new_normalisation_and_calibration() -> None:
    old = warmed()
    slot = old.store.slot("m1/temp")
    raw_level = old.scorer.value_run.mean[slot] * 2.0  # offset 0, scale 2
    raw_sd = math.sqrt(old.scorer.value_run.var[slot]) * 2.0
    raw_low, raw_high = old.scorer.low[slot] * 2.0, old.scorer.high[slot] * 2.0
    new_scale = SeriesScale(5.0, 4.0, low=-100.0, high=raw_high - 1.0)
    new = core_of(artifact("v2", scale=new_scale, error_std=0.7))
    new.restore(old.snapshot())
    s = new.store.slot("m1/temp")
    assert (new.scales.offset[s], new.scales.scale[s]) == (5.0, 4.0)
    # The level, in raw units, is what it was.
    assert new.scorer.value_run.mean[s] * 4.0 + 5.0 == pytest.approx(raw_level)
    assert math.sqrt(new.scorer.value_run.var[s]) * 4.0 == pytest.approx(raw_sd)
    # The range: the union of what was seen (high) and the new training range (low).
    assert new.scorer.low[s] * 4.0 + 5.0 == pytest.approx(min(raw_low, -100.0))
    assert new.scorer.high[s] * 4.0 + 5.0 == pytest.approx(raw_high)
    # Forecast errors: from the new calibration (std 0.7; |residual| of a normal law).
    assert new.errors.var[s] == pytest.approx(0.49)
    assert new.scorer.error_run.mean[s] == pytest.approx(0.7 * math.sqrt(2 / math.pi))
    assert new.scorer.recent_error.count[s] == 0
    assert new.last_carry is not None
    assert (new.last_carry.calibrated, new.last_carry.rescaled) == (1, 1)


def test_keep_rule_converts_the_old_error_statistics() -> None:
    old = warmed()
    slot = old.store.slot("m1/temp")
    var = old.errors.var[slot]
    state, _ = carry_over(old.snapshot(), artifact("v2", scale=SeriesScale(0.0, 4.0)), "keep")
    row = [str(k) for k in state["keys"]].index("m1/temp")
    assert state["err_var"][row] == pytest.approx(var * (2.0 / 4.0) ** 2)


@pytest.mark.parametrize("window_len", [3, 6])
def test_another_window_length_relays_the_windows(window_len: int) -> None:
    old = warmed()
    new = core_of(artifact("v2", window_len=window_len))
    new.restore(old.snapshot())
    last = readings(0, 40)[-3 * 3 :]  # the last three readings of each series
    for key in SERIES:
        values, _ = new.store.windows(np.array([new.store.slot(key)]))
        expect = [r.value for r in last if r.key == key]
        assert values[0, -3:].tolist() == pytest.approx(expect, abs=1e-5)
    first = new.process(readings(40, 41), now=T0 + 3600)
    # A shorter window is full at once; a longer one waits for the readings it lacks (2).
    assert first.warming == (0 if window_len == 3 else 3)
    if window_len == 6:
        new.process(readings(41, 42), now=T0 + 3600)
        assert new.process(readings(42, 43), now=T0 + 3600).warming == 0


def test_a_checkpoint_of_another_version_is_carried_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.npz"
    registry = CollectorRegistry()
    Checkpointer(path, registry=registry).save(warmed())
    new = core_of(artifact("v2"))
    with caplog.at_level(logging.INFO, logger="iotad.checkpoint"):
        assert Checkpointer(path, registry=CollectorRegistry()).restore(new) == 3
    carried = [r.getMessage() for r in caplog.records if "carried over" in r.getMessage()]
    assert len(carried) == 1 and "v1" in carried[0] and "v2" in carried[0]
    assert new.process(readings(40, 41), now=T0 + 3600).warming == 0


def test_error_statistics_match_a_fresh_trained_series() -> None:
    """After a carry, a known series' error statistics are exactly those a fresh series of
    the new artifact starts from (the documented rule)."""
    art = artifact("v2", error_std=0.5)
    new = core_of(art)
    new.restore(warmed().snapshot())
    fresh = core_of(art)
    fresh.process([Reading("m1", "temp", T0, 1.0)], now=T0)
    a, b = new.store.slot("m1/temp"), fresh.store.slot("m1/temp")
    assert new.errors.var[a] == fresh.errors.var[b]
    assert new.scorer.error_run.var[a] == fresh.scorer.error_run.var[b]


def test_a_core_judging_series_alone_snapshots_and_carries_over() -> None:
    """relate_devices off: no device model exists (a snapshot used to fail on it)."""
    alone = dataclasses.replace(CFG, relate_devices=False)
    old = DetectionCore(artifact("v1"), LastValueForecaster(), alone)
    old.process(readings(0, 30), now=T0 + 3600)
    new = DetectionCore(artifact("v2"), LastValueForecaster(), alone)
    assert new.restore(old.snapshot()) == len(SERIES)
    assert new.process(readings(30, 31), now=T0 + 3600).warming == 0
