"""The per-slot state contract (`detector.engine.slot_state`): every part of the core grows,
resets, snapshots and restores its own arrays, and snapshots carry each part's version."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest

from detector.engine.artifact import Artifact, SeriesScale
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from detector.engine.slot_state import SlotState, version_key
from detector.worker.checkpoint import check_state, select_rows, state_bytes, state_from_bytes
from tests.detector.core_fixtures import LastValueForecaster, make_artifact

CFG = DetectionConfig(resolve_after=3, quiet_period=5, learn_readings=5, silence_after=3.0)
T0 = 1_700_000_000.0
# m1 has three metrics (device relations), m2 one; m3/new is known to no model.
SERIES = ("m1/temp", "m1/rpm", "m1/flow", "m2/temp", "m3/new")


def artifact() -> Artifact:
    return dataclasses.replace(
        make_artifact(window_len=4),
        series_scales={
            "m1/temp": SeriesScale(0.0, 3.0, -5.0, 5.0, period=12),
            "m1/rpm": SeriesScale(10.0, 2.0, 5.0, 15.0, period=12),
            "m1/flow": SeriesScale(20.0, 2.0, 15.0, 25.0, repeat_run=4),
        },
    )


def readings(start: int, stop: int) -> list[Reading]:
    rng = random.Random(start)
    out = []
    for i in range(start, stop):
        for k, key in enumerate(SERIES):
            device, metric = key.split("/")
            value = 10.0 * k + 3 * math.sin(2 * math.pi * i / 12 + k) + rng.gauss(0, 0.2)
            if i == 40 and key == "m1/temp":
                value += 30.0  # an episode, open at the snapshot
            out.append(Reading(device, metric, T0 + 60.0 * i, value))
    return out


def warmed() -> DetectionCore:
    core = DetectionCore(artifact(), LastValueForecaster(), CFG)
    for start in range(0, 42, 6):
        core.process(readings(start, start + 6), now=T0 + 60.0 * (start + 6))
    return core


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_every_part_follows_the_contract_with_a_distinct_name() -> None:
    core = warmed()
    names = [part.name for part in core.parts]
    assert len(set(names)) == len(names)
    for part in core.parts:
        assert isinstance(part, SlotState), part.name
        assert part.version >= 1
        assert part.nbytes() > 0, part.name
    assert core.state_bytes() == sum(part.nbytes() for part in core.parts)


def test_no_two_parts_write_the_same_snapshot_name() -> None:
    core = warmed()
    used = core.store.used_slots()
    seen: dict[str, str] = {}
    for part in core.parts:
        for name in part.snapshot(used):
            assert name not in seen, f"{name} written by {seen.get(name)} and {part.name}"
            seen[name] = part.name


PARTS = [part.name for part in DetectionCore(artifact(), LastValueForecaster(), CFG).parts]


@pytest.mark.parametrize("name", PARTS)
def test_each_part_round_trips_through_its_snapshot(name: str) -> None:
    """snapshot -> reset -> restore gives each part's rows back as they were."""
    core = warmed()
    part = next(p for p in core.parts if p.name == name)
    used = core.store.used_slots()
    before = part.snapshot(used)
    for slot in used.tolist():
        part.reset(slot)
        if part.name == "relations":  # reset detaches: the core attaches at allocation
            core.relations.attach(slot, str(core.store.key(slot)))
        if part.name == "seasonal":  # reset drops the ring: the core gives it at allocation
            period = core.artifact.series_scales.get(str(core.store.key(slot)))
            core.seasonal.set_period(slot, period.period if period else None)
    part.restore(used, before)
    same(before, part.snapshot(used))


def test_the_whole_core_round_trips_with_every_part_versioned() -> None:
    core = warmed()
    state = core.snapshot()
    for part in core.parts:
        assert state[version_key(part.name)].tolist() == [part.version] * len(SERIES)
    restored = DetectionCore(artifact(), LastValueForecaster(), CFG)
    assert restored.restore(state) == len(SERIES)
    same(state, restored.snapshot())


def test_a_snapshot_without_versions_reads_as_version_1() -> None:
    """Checkpoints written before parts had versions restore as before."""
    state = warmed().snapshot()
    old = {k: v for k, v in state.items() if not k.startswith("version_")}
    restored = DetectionCore(artifact(), LastValueForecaster(), CFG)
    assert restored.restore(old) == len(SERIES)
    same(state, restored.snapshot())


@pytest.mark.parametrize("part", ["windows", "level", "seasonal", "relations"])
def test_a_part_version_this_code_does_not_read_is_refused(part: str) -> None:
    state = warmed().snapshot()
    state[version_key(part)] = np.full(len(SERIES), 2, dtype=np.int16)
    fresh = DetectionCore(artifact(), LastValueForecaster(), CFG)
    with pytest.raises(ValueError, match=f"part '{part}' is version 2"):
        fresh.restore(state)
    assert fresh.active_series == 0  # refused before anything was loaded


def test_version_entries_pass_the_checkpoint_checks_and_survive_a_row_split() -> None:
    """One entry per series: the file checks take them, and the NATS split keeps them."""
    state = warmed().snapshot()
    data = state_from_bytes(state_bytes(state))
    assert check_state(data, 4, str(state["model_version"])) == len(SERIES)
    keep = np.array([True, False, True, False, True])
    part = select_rows(data, keep)
    assert part[version_key("windows")].tolist() == [1, 1, 1]
    fresh = DetectionCore(artifact(), LastValueForecaster(), CFG)
    assert fresh.restore(part) == 3


def test_a_part_that_changes_its_version_refuses_older_snapshots() -> None:
    """A part whose code moves to version 2 rejects a snapshot of its version 1."""
    state = warmed().snapshot()
    fresh = DetectionCore(artifact(), LastValueForecaster(), CFG)
    fresh.errors.version = 2  # as a new build's ErrorTracker would declare it
    with pytest.raises(ValueError, match="part 'errors' is version 1"):
        fresh.restore(state)


def test_release_resets_every_part_of_the_slot() -> None:
    """Releasing a series frees its seasonal ring and error row and its device position,
    as eviction does; a series that takes the slot again starts from scratch."""
    core = warmed()
    slot = core.store.slot("m1/temp")
    assert slot is not None
    assert slot in core.seasonal.rings.rings and core.relations.dev_pos[slot] >= 0
    assert core.release("m1/temp") == slot
    assert slot not in core.seasonal.rings.rings
    assert core.seasonal.error_stats.row[slot] == -1
    assert core.relations.dev_row[slot] == -1 and core.relations.dev_pos[slot] == -1
    assert not core.episodes.active[slot] and core.scorer.seen_count[slot] == 0
    assert core.release("m1/temp") is None


def test_parts_grow_with_the_store() -> None:
    cfg = dataclasses.replace(CFG, max_series=5000)
    core = DetectionCore(artifact(), LastValueForecaster(), cfg)
    small = core.state_bytes()
    core.process(
        [Reading(f"d{i}", "m", T0, 1.0) for i in range(1500)], now=T0
    )  # past the first 1024 slots
    assert core.store.capacity > 1024
    for part in core.parts:
        for name, rows in part.snapshot(core.store.used_slots()).items():
            assert rows.shape[0] == 1500, (part.name, name)
    assert core.state_bytes() > small


@pytest.mark.parametrize("key", ["m9/new", "m1/temp"])
def test_a_released_slot_taken_again_starts_like_a_fresh_core(key: str) -> None:
    """A free slot holds every part's start values: a series that takes a released slot
    starts exactly as it would in a new core."""
    core = warmed()
    slot = core.store.slot("m1/temp")
    core.release("m1/temp")
    assert core.allocate(key) == slot
    fresh = DetectionCore(artifact(), LastValueForecaster(), CFG)
    first = fresh.allocate(key)
    assert first is not None
    for part, new in zip(core.parts, fresh.parts, strict=True):
        if part.name == "relations":
            continue  # m1's other metrics are still in its device model here
        same(part.snapshot(np.array([slot])), new.snapshot(np.array([first])))
