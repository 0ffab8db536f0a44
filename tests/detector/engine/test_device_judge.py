"""Which readings of a round the device models judge: complete, aligned, known groups only.

The model is `sibling_model` of tests/test_device_model.py: each metric's change forecast as
``w`` times its sibling's reading now, sigma 1, so every z here is worked out by hand.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from detector.engine.artifact import ArtifactError, load_artifact
from detector.engine.device_judge import DeviceJudge
from detector.engine.device_model import save_device_model
from detector.engine.readings import Reading
from tests.detector.engine.test_artifact import valid_doc, write
from tests.detector.engine.test_device_model import random_model, sibling_model

W = 0.5
WINDOW_LEN = 4
TS = 1_000.0


def pair_by_hand(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """``(z_a, z_b)`` of a two-metric device, each given as ``(last, now)``, under the
    suspect rule: with the sibling seen the forecast is ``last + W * sibling now``, hidden it
    is ``last``; the device's hypothesis (nobody suspect, a, or b) is the one with the least
    sum of squared deviations, a suspect's own term charged 1."""
    full_a = a[1] - a[0] - W * b[1]
    full_b = b[1] - b[0] - W * a[1]
    alone_a, alone_b = a[1] - a[0], b[1] - b[0]
    costs = {
        "nobody": full_a**2 + full_b**2,
        "a": alone_b**2 + 1.0,  # a suspect: b judged without it
        "b": alone_a**2 + 1.0,
    }
    suspect = min(costs, key=lambda k: costs[k])
    return {
        "nobody": (full_a, full_b),
        "a": (full_a, alone_b),
        "b": (alone_a, full_b),
    }[suspect]


class Round:
    """One round's readings with their scaled values, windows and window timestamps."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.now: list[float] = []
        self.windows: list[np.ndarray] = []
        self.stamps: list[np.ndarray] = []

    def add(
        self,
        device: str,
        metric: str,
        now: float,
        last: float,
        ts: float = TS,
        stamps: np.ndarray | None = None,
    ) -> Round:
        self.readings.append(Reading(device, metric, ts, now))
        self.now.append(now)
        window = np.full(WINDOW_LEN, 7.0)  # only the last `window` readings may matter
        window[-1] = last
        self.windows.append(window)
        self.stamps.append(ts - 60.0 * np.arange(WINDOW_LEN, 0, -1) if stamps is None else stamps)
        return self

    def judge(self, judge: DeviceJudge) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return judge.judge(
            self.readings, np.array(self.now), np.array(self.windows), np.array(self.stamps)
        )


def judge_for(*keys: str, window: int = 1) -> DeviceJudge:
    model = dataclasses.replace(sibling_model(w=W), window=window)
    model.validate()
    return DeviceJudge((model,), frozenset(keys))


KNOWN = ("d1/a", "d1/b", "d2/a", "d2/b", "d3/a", "d3/b", "d3/c")


def test_a_complete_aligned_group_is_judged() -> None:
    judge = judge_for(*KNOWN)
    z, expected, sigma = Round().add("d1", "a", 2.0, 1.0).add("d1", "b", 3.0, 0.0).judge(judge)
    assert z == pytest.approx(pair_by_hand((1.0, 2.0), (0.0, 3.0)))
    # The worked numbers: seen together a is -0.5 and b 2 (4.25 in squares); b hidden, a is
    # 1 (2 with b's charge); a hidden, b is 3 (10). b is the suspect, judged with a seen.
    assert z == pytest.approx([1.0, 2.0])
    assert expected == pytest.approx([1.0, 1.0])
    assert sigma == pytest.approx([1.0, 1.0])
    assert judge.calls == 1


def test_readings_are_matched_by_device_and_metric_not_by_position() -> None:
    judge = judge_for(*KNOWN)
    r = (
        Round()
        .add("d2", "b", 3.0, 0.0)
        .add("d1", "b", -1.0, 0.5)
        .add("d2", "a", 2.0, 1.0)
        .add("d1", "a", 4.0, 4.0)
    )
    z, _, _ = r.judge(judge)
    d1_a, d1_b = pair_by_hand((4.0, 4.0), (0.5, -1.0))
    d2_a, d2_b = pair_by_hand((1.0, 2.0), (0.0, 3.0))
    assert z == pytest.approx([d2_b, d1_b, d2_a, d1_a])
    assert judge.calls == 1  # both devices in one batch


def test_a_missing_sibling_leaves_the_device_unjudged() -> None:
    judge = judge_for(*KNOWN)
    r = Round().add("d1", "a", 2.0, 1.0).add("d2", "b", 3.0, 0.0)  # a and b of other devices
    z, expected, sigma = r.judge(judge)
    assert np.all(np.isnan(z)) and np.all(np.isnan(expected)) and np.all(np.isnan(sigma))
    assert judge.calls == 0


def test_siblings_at_different_timestamps_are_not_a_group() -> None:
    judge = judge_for(*KNOWN)
    r = Round().add("d1", "a", 2.0, 1.0, ts=TS).add("d1", "b", 3.0, 0.0, ts=TS + 1.0)
    z, _, _ = r.judge(judge)
    assert np.all(np.isnan(z))


def test_windows_out_of_step_leave_the_device_unjudged() -> None:
    judge = judge_for(*KNOWN, window=2)
    shifted = TS - 60.0 * np.arange(WINDOW_LEN, 0, -1)
    shifted[-2] -= 1.0  # b's second-to-last reading was taken a second earlier than a's
    r = Round().add("d1", "a", 2.0, 1.0).add("d1", "b", 3.0, 0.0, stamps=shifted)
    r.add("d2", "a", 2.0, 1.0).add("d2", "b", 3.0, 0.0)
    z, _, _ = r.judge(judge)
    assert np.all(np.isnan(z[:2]))
    assert np.all(np.isfinite(z[2:]))


def test_only_the_models_window_must_be_in_step() -> None:
    judge = judge_for(*KNOWN, window=2)
    shifted = TS - 60.0 * np.arange(WINDOW_LEN, 0, -1)
    shifted[0] -= 1.0  # out of step before the model's window: does not matter
    r = Round().add("d1", "a", 2.0, 1.0).add("d1", "b", 3.0, 0.0, stamps=shifted)
    z, _, _ = r.judge(judge)
    assert np.all(np.isfinite(z))


def test_a_window_with_missing_timestamps_is_not_judged() -> None:
    judge = judge_for(*KNOWN)
    nan_stamps = np.full(WINDOW_LEN, np.nan)
    r = (
        Round()
        .add("d1", "a", 2.0, 1.0, stamps=nan_stamps)
        .add("d1", "b", 3.0, 0.0, stamps=nan_stamps)
    )
    z, _, _ = r.judge(judge)
    assert np.all(np.isnan(z))


def test_series_the_artifact_did_not_scale_are_not_judged() -> None:
    judge = judge_for("d1/a", "d1/b")  # d2 is new: its scale is a guess
    r = Round().add("d1", "a", 2.0, 1.0).add("d1", "b", 3.0, 0.0)
    r.add("d2", "a", 2.0, 1.0).add("d2", "b", 3.0, 0.0)
    z, _, _ = r.judge(judge)
    assert np.all(np.isfinite(z[:2]))
    assert np.all(np.isnan(z[2:]))
    # One sibling unknown is enough to leave the device out.
    judge = judge_for("d1/a")
    z, _, _ = Round().add("d1", "a", 2.0, 1.0).add("d1", "b", 3.0, 0.0).judge(judge)
    assert np.all(np.isnan(z))


def test_a_device_with_more_metrics_than_the_signature() -> None:
    judge = judge_for(*KNOWN)
    r = Round().add("d3", "c", 50.0, 0.0).add("d3", "b", 3.0, 0.0).add("d3", "a", 2.0, 1.0)
    z, _, _ = r.judge(judge)
    assert np.isnan(z[0])
    z_a, z_b = pair_by_hand((1.0, 2.0), (0.0, 3.0))
    assert z[1:] == pytest.approx([z_b, z_a])


def test_nothing_is_judged_without_window_timestamps_or_models() -> None:
    r = Round().add("d1", "a", 2.0, 1.0).add("d1", "b", 3.0, 0.0)
    judge = judge_for(*KNOWN)
    z, _, _ = judge.judge(r.readings, np.array(r.now), np.array(r.windows), None)
    assert np.all(np.isnan(z))
    empty = DeviceJudge((), frozenset(KNOWN))
    assert not empty.active
    assert np.all(np.isnan(r.judge(empty)[0]))


# -- from an artifact ---------------------------------------------------------------------------


def _artifact_with(tmp_path: Path, models: dict[str, tuple[str, ...]], window: int) -> Path:
    doc = valid_doc()
    doc["device_models"] = [
        {"metrics": list(metrics), "window": window, "file": name}
        for name, metrics in models.items()
    ]
    return write(tmp_path / "art", json.dumps(doc))


def test_from_artifact_loads_the_models_largest_signature_first(tmp_path: Path) -> None:
    directory = _artifact_with(tmp_path, {"two.npz": ("a", "b"), "three.npz": ("a", "b", "c")}, 3)
    save_device_model(random_model(m=2, window=3), directory / "two.npz")
    save_device_model(random_model(m=3, window=3), directory / "three.npz")
    judge = DeviceJudge.from_artifact(load_artifact(directory))
    assert judge.active
    assert [m.metrics for m in judge.models] == [("a", "b", "c"), ("a", "b")]
    assert judge.known == frozenset({"press1/temp", "press2/temp"})


def test_from_artifact_refuses_a_corrupt_model_file_as_an_artifact_error(tmp_path: Path) -> None:
    directory = _artifact_with(tmp_path, {"two.npz": ("a", "b")}, 3)
    (directory / "two.npz").write_bytes(b"not an npz\n")
    artifact = load_artifact(directory)  # only checks that the file exists
    with pytest.raises(ArtifactError, match=r"two\.npz"):
        DeviceJudge.from_artifact(artifact)


def test_from_artifact_refuses_weights_of_another_shape(tmp_path: Path) -> None:
    directory = _artifact_with(tmp_path, {"two.npz": ("a", "b")}, 3)
    save_device_model(random_model(m=3, window=3), directory / "two.npz")
    with pytest.raises(ArtifactError, match=r"two\.npz"):
        DeviceJudge.from_artifact(load_artifact(directory))
