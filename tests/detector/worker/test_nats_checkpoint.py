"""Splitting a snapshot by partition and merging partitions back (no server: the pure part
of `detector.worker.nats_checkpoint`)."""

from __future__ import annotations

import math

import numpy as np

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from detector.worker.nats_checkpoint import merge_states, partition_rows, split_state
from detector.worker.partitions import partition_of
from tests.detector.core_fixtures import LastValueForecaster, make_artifact

P = 8
DEVICES = [f"dev{i}" for i in range(30)]


def fed_core() -> DetectionCore:
    core = DetectionCore(make_artifact(window_len=4), LastValueForecaster(), DetectionConfig())
    batch = [
        Reading(d, m, 1_700_000_000.0 + 60 * i, math.sin(i / 3 + k) + j)
        for i in range(12)
        for k, d in enumerate(DEVICES)
        for j, m in enumerate(("temp", "rpm"))
    ]
    core.process(batch)
    return core


def by_key(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.argsort(state["keys"])
    return {n: a if a.ndim == 0 else a[order] for n, a in state.items()}


def test_partition_rows_hash_the_device_only() -> None:
    keys = np.array(["a/temp", "a/rpm", "foobar/x"])
    assert partition_rows(keys, 64).tolist() == [44, 44, 0xBF9CF968 % 64]


def test_split_then_merge_restores_the_same_state() -> None:
    core = fed_core()
    state = core.snapshot()
    parts = split_state(state, P, list(range(P)))
    assert sum(len(s["keys"]) for s in parts.values()) == len(DEVICES) * 2
    for p, s in parts.items():
        assert all(partition_of(str(k).split("/")[0], P) == p for k in s["keys"])
    restored = DetectionCore(make_artifact(window_len=4), LastValueForecaster(), DetectionConfig())
    assert restored.restore(merge_states(list(parts.values()))) == len(DEVICES) * 2
    a, b = by_key(state), by_key(restored.snapshot())
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_an_owned_partition_without_series_gets_an_empty_state() -> None:
    state = fed_core().snapshot()
    empty = [p for p in range(64) if p not in set(partition_rows(state["keys"], 64).tolist())]
    parts = split_state(state, 64, empty[:1])
    assert len(parts[empty[0]]["keys"]) == 0
    assert parts[empty[0]]["values"].shape[1:] == state["values"].shape[1:]


def test_merge_pads_narrower_rows() -> None:
    a = {"keys": np.array(["d/m"]), "ring": np.ones((1, 2)), "format": np.array(1)}
    b = {"keys": np.array(["e/m"]), "ring": np.ones((1, 3)), "format": np.array(1)}
    merged = merge_states([a, b])
    assert merged["ring"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert merged["keys"].tolist() == ["d/m", "e/m"]
