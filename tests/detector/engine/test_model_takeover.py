"""The fast hot swap (`detector.engine.model_takeover`) gives what the snapshot path gives, and
leaves the old core as it was."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest

from detector.engine.artifact import Artifact, ErrorStats, SeriesScale
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.events import BatchResult
from detector.engine.model_takeover import can_take_over, take_over
from detector.engine.readings import Reading
from tests.detector.core_fixtures import LastValueForecaster, make_artifact

CFG = DetectionConfig(resolve_after=3, quiet_period=5, learn_readings=5)
T0 = 1_700_000_000.0
# m1 has three metrics (device relations), m2 one; m3/new is known to no model.
SERIES = ("m1/temp", "m1/rpm", "m1/flow", "m2/temp", "m3/new")


def readings(start: int, stop: int, spike_at: int | None = None) -> list[Reading]:
    rng = random.Random(start)
    out = []
    for i in range(start, stop):
        for k, key in enumerate(SERIES):
            device, metric = key.split("/")
            value = 10.0 * k + 3 * math.sin(2 * math.pi * i / 12 + k) + rng.gauss(0, 0.2)
            if i == spike_at and key == "m1/temp":
                value += 30.0
            out.append(Reading(device, metric, T0 + 60.0 * i, value))
    return out


def old_artifact() -> Artifact:
    art = make_artifact(window_len=4)
    return dataclasses.replace(
        art,
        version="old",
        series_scales={
            "m1/temp": SeriesScale(0.0, 3.0, -5.0, 5.0, period=12),
            "m1/rpm": SeriesScale(10.0, 2.0, 5.0, 15.0, period=12),
            "m1/flow": SeriesScale(20.0, 2.0, 15.0, 25.0),
        },
    )


def new_artifact() -> Artifact:
    errors = ErrorStats(0.0, 0.4, {}, 100)
    return dataclasses.replace(
        make_artifact(window_len=4),
        version="new",
        series_scales={
            "m1/temp": SeriesScale(1.0, 2.5, -6.0, 6.0, period=15),  # rescaled, new period
            "m1/flow": SeriesScale(20.0, 2.0, 15.0, 25.0),  # unchanged
            "m2/temp": SeriesScale(30.0, 3.0, 25.0, 35.0, period=12),  # newly known
        },
        series_errors={"m1/temp": errors, "m2/temp": errors},
        alert_z_scale=1.5,
    )


def warmed() -> DetectionCore:
    core = DetectionCore(old_artifact(), LastValueForecaster(), CFG)
    for start in range(0, 60, 6):
        core.process(readings(start, start + 6), now=T0 + 60.0 * (start + 6))
    return core


def fresh_new() -> DetectionCore:
    return DetectionCore(new_artifact(), LastValueForecaster(), CFG)


def outcome(result: BatchResult) -> list[tuple]:
    return [
        (s.reading.key, s.reading.ts, s.score, s.expected, s.lower, s.upper, s.is_anomaly)
        for s in result.scored
    ] + [(e.id, e.state, e.signal) for e in result.events]


def run(core: DetectionCore) -> list[tuple]:
    out = []
    for start in range(60, 120, 5):
        out += outcome(core.process(readings(start, start + 5, spike_at=80), now=T0 + 9000))
    return out


def assert_same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if len(x) == 3:  # an event: id, state, signal
            assert x == y
            continue
        assert x[:2] == y[:2]
        assert x[2:] == pytest.approx(y[2:], rel=1e-9, abs=1e-12)


def test_take_over_scores_exactly_like_the_snapshot_path() -> None:
    by_snapshot = fresh_new()
    by_snapshot.restore(warmed().snapshot())
    taken = fresh_new()
    report = take_over(taken, warmed())
    assert report == by_snapshot.last_carry
    assert (report.calibrated, report.rescaled) == (3, 2)  # m2/temp: fitted online before
    after = run(taken)
    assert_same(after, run(by_snapshot))
    assert any(e[1] == "firing" for e in after if len(e) == 3)  # the spike fired in both


def test_the_old_core_is_left_as_it_was() -> None:
    old = warmed()
    take_over(fresh_new(), old)
    assert_same(run(old), run(warmed()))


def test_another_window_needs_the_snapshot_path() -> None:
    longer = DetectionCore(
        dataclasses.replace(new_artifact(), window_len=6), LastValueForecaster(), CFG
    )
    old = warmed()
    assert not can_take_over(longer, old)
    with pytest.raises(ValueError, match="restore a snapshot"):
        take_over(longer, old)


def test_relations_are_converted_to_the_new_normalisation() -> None:
    """m1/temp's mean in the device model, in raw units, is what it was (a hand check of
    one entry, independent of the snapshot path)."""
    old = warmed()
    slot = old.store.slot("m1/temp")
    rel = old.relations.models[0]
    row, pos = rel.row_of[old.relations.dev_row[slot]], old.relations.dev_pos[slot]
    raw = rel.mean[row, pos] * 3.0 + 0.0  # old scale 3, offset 0
    var_raw = rel.cov[row, pos, pos] * 3.0**2
    new = fresh_new()
    take_over(new, old)
    rel2 = new.relations.models[0]
    assert rel2.mean[row, pos] * 2.5 + 1.0 == pytest.approx(raw)
    assert rel2.cov[row, pos, pos] * 2.5**2 == pytest.approx(var_raw)
    assert np.all(new.scales.z_scale[new.store.used_slots()] == 1.5)


def test_the_rules_in_force_apply_to_every_series_after_the_swap() -> None:
    """The new core is built with the rules in force (a reload may have changed them since
    the start); take_over assigns them to every series it takes."""
    from detector.worker.rules_file import parse_rules

    rules = parse_rules(b'[[rule]]\ndevice = "m1"\nmetric = "temp"\nthreshold = 0.9\n')
    new = DetectionCore(new_artifact(), LastValueForecaster(), CFG, rules)
    take_over(new, warmed())
    assert new.rules.threshold[new.store.slot("m1/temp")] == 0.9
    assert new.rules.threshold[new.store.slot("m1/rpm")] == CFG.threshold
