"""The factory benchmark's scenario: clean history, a stream with planned faults of every kind."""

from __future__ import annotations

import copy
import itertools
from collections import Counter

import numpy as np
import pytest

from detector.sim.faults import FAULT_KINDS
from detector.sim.simulation import FactorySimulator
from training.factory_scenario import (
    MIN_GAP_READINGS,
    SHAPES,
    STREAM_START_TS,
    build_scenario,
    run_block,
)


@pytest.fixture(scope="module")
def scenario():  # type: ignore[no-untyped-def]
    return build_scenario(SHAPES["small"], 0, history_days=2, stream_days=1, faults_per_kind=2)


def test_every_kind_planned_evenly_and_never_two_at_once_on_a_device(scenario) -> None:  # type: ignore[no-untyped-def]
    assert Counter(f.kind for f in scenario.faults) == dict.fromkeys(FAULT_KINDS, 2)
    by_device: dict[str, list] = {}
    for f in scenario.faults:
        by_device.setdefault(f.device, []).append(f)
    gap = MIN_GAP_READINGS * scenario.interval_s
    for faults in by_device.values():
        faults.sort(key=lambda f: f.start_ts)
        for a, b in itertools.pairwise(faults):
            assert b.start_ts >= a.end_ts + gap
    end = scenario.stream.ts[-1]
    assert all(
        scenario.stream.ts[0] <= f.start_ts and f.end_ts + 5 * 60 <= end for f in scenario.faults
    )


def test_history_is_clean_and_the_stream_is_its_continuation(scenario) -> None:  # type: ignore[no-untyped-def]
    h, s = scenario.history, scenario.stream
    assert s.ts[0] == STREAM_START_TS and h.ts[-1] + 60 == s.ts[0]
    assert len(h.ts) == 2 * 1440 and len(s.ts) == 1440 and h.present.all()
    config = SHAPES["small"].config(0)
    sim = FactorySimulator(config, float(h.ts[0]))
    clean_history = run_block(sim, h.ts)
    assert (clean_history.values == h.values).all()
    clean = run_block(copy.deepcopy(sim), s.ts)
    touched = np.zeros(s.values.shape, dtype=bool)
    for f in scenario.faults:
        d = scenario.devices.index(f.device)
        during = (s.ts >= f.start_ts) & (s.ts < f.end_ts)
        if f.metric == "*":
            touched[during, d, :] = True
            assert not s.present[during, d].any()
        else:
            touched[during, d, scenario.metrics.index(f.metric)] = True
    assert (s.values[~touched] == clean.values[~touched]).all()
    assert (s.values[touched] != clean.values[touched]).mean() > 0.9


def test_kinds_start_in_the_regime_they_need(scenario) -> None:  # type: ignore[no-untyped-def]
    s = scenario.stream
    for f in scenario.faults:
        d = scenario.devices.index(f.device)
        t = int(np.searchsorted(s.ts, f.start_ts))
        during = (s.ts >= f.start_ts) & (s.ts < f.end_ts)
        if f.kind in ("oscillation", "current_rise"):
            assert s.running[during, d].all()
        if f.kind == "current_rise":
            assert f.metric == "current" and f.magnitude > 0
        if f.kind == "decoupled":
            changed = (
                s.running[t, d] != s.running[t - 1, d]
                or abs(s.load[t, d] - s.load[t - 1, d]) >= 0.2
            )
            assert changed


def test_the_default_plant_holds_at_least_fifty_faults() -> None:
    planned = 6 * len(FAULT_KINDS)
    assert planned >= 50
    small = build_scenario(SHAPES["small"], 1, history_days=0.5, stream_days=3, faults_per_kind=6)
    assert len(small.faults) == planned


def test_alert_context_is_near_a_change_or_the_regime() -> None:
    from training.factory_scenario import Block, Scenario, alert_context, near_change_fraction

    ts = 60.0 * np.arange(40)
    running = (np.arange(40) >= 10).reshape(40, 1)  # starts at tick 10
    block = Block(
        ts,
        np.zeros((40, 1, 1)),
        np.ones((40, 1), dtype=bool),
        running,
        np.where(running, 0.8, 0.0),
        np.where(running, 0, 3).astype(np.int8),  # REGIMES: running, ..., stopped
    )
    sc = Scenario(SHAPES["small"], 0, 60.0, ("a",), ("x",), block, block, [])
    # Tick 10 is the start: 15 readings either side are near it.
    assert [alert_context(sc, "a", 60.0 * t) for t in (0, 24, 25, 26, 39)] == [
        "near_change",
        "near_change",
        "near_change",
        "running",
        "running",
    ]
    assert near_change_fraction(sc) == 26 / 40  # ticks 0-25 of 40
