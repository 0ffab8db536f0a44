"""The detection core with a device model: judged readings' expected band in raw units, a
missing sibling or windows out of step leave a reading to the forecaster, and a fault on one
sensor does not make its sibling look faulty.

The model is `sibling_model` (tests/detector/engine/test_device_model.py): each metric's change is
forecast as W times its sibling's *scaled* reading now, with sigma SIGMA; hiding the sibling
forecasts no change. Every expected number is worked out here by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.engine.artifact import SCHEMA_VERSION, load_artifact
from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.device_model import save_device_model
from detector.engine.events import BatchResult, Scored
from detector.engine.readings import Reading
from detector.engine.scoring import SIGNALS
from tests.detector.core_fixtures import LastValueForecaster
from tests.detector.engine.test_device_model import sibling_model

W = 0.5
SIGMA = 0.5
WINDOW_LEN = 3
BAND = 3.0
# raw = offset + scale * scaled
SCALES = {"a": (10.0, 2.0), "b": (100.0, 5.0)}
T0 = 1_000_000.0
STEP = 60.0


def write_artifact(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model = sibling_model(w=W, log_sigma=math.log(SIGMA))
    save_device_model(model, directory / "device_ab.npz")
    err = {"mean": 0.0, "std": 1.0, "abs_quantiles": {}, "n": 100}
    per_series: dict[str, Any] = {
        f"{device}/{metric}": {"offset": o, "scale": s, "repeat_run": None}
        for device in ("d1",)
        for metric, (o, s) in SCALES.items()
    }
    doc = {
        "schema_version": SCHEMA_VERSION,
        "version": "test-device-model",
        "created_at": "2026-11-28T00:00:00Z",
        "code_version": "iotad test",
        "model": {"cell": "lstm", "units": [4], "layers": 1, "bidirectional": False},
        "window_len": WINDOW_LEN,
        "horizon": 1,
        "features": ["value"],
        "scaling": {
            "method": "standard",
            "per_series": per_series,
            "default": {"offset": 0.0, "scale": 1.0},
        },
        "calibration": {"per_series": {k: err for k in per_series}, "global": err},
        "files": {"keras": "model.keras", "tflite": {"1": "model_b1.tflite"}},
        "device_models": [{"metrics": ["a", "b"], "window": 1, "file": "device_ab.npz"}],
    }
    (directory / "artifact.json").write_text(json.dumps(doc), encoding="utf-8")
    for name in ("model.keras", "model_b1.tflite"):
        (directory / name).write_bytes(b"placeholder")
    return directory


@pytest.fixture
def core(tmp_path: Path) -> DetectionCore:
    artifact = load_artifact(write_artifact(tmp_path / "artifact"))
    assert len(artifact.device_models) == 1
    c = DetectionCore(artifact, LastValueForecaster(), DetectionConfig(band_sigmas=BAND))
    assert c.device_judge.active
    return c


def raw(metric: str, scaled: float) -> float:
    offset, scale = SCALES[metric]
    return offset + scale * scaled


def by_hand(last: float, now: float, sibling_now: float) -> tuple[float, float]:
    """(expected, z) in scaled units: the variant with the smaller |z| of sibling visible
    (last + W * sibling now) and sibling hidden (last)."""
    visible = last + W * sibling_now
    hidden = last
    z_visible, z_hidden = (now - visible) / SIGMA, (now - hidden) / SIGMA
    return (visible, z_visible) if abs(z_visible) <= abs(z_hidden) else (hidden, z_hidden)


def step(core: DetectionCore, i: int, **scaled: float) -> dict[str, Scored]:
    """The readings of d1 at timestamp i (scaled values by metric), in one call."""
    ts = T0 + STEP * i
    batch = [Reading("d1", m, ts, raw(m, v)) for m, v in scaled.items()]
    res: BatchResult = core.process(batch, now=ts + 1.0)
    assert not res.dropped
    return {s.reading.metric: s for s in res.scored}


# Scaled values: a's change follows W * b now exactly up to step 3; step 4 is off by 0.1.
A = [0.0, 0.5, 1.0, 1.5, 2.2]
B = [1.0, 1.0, 1.0, 1.0, 1.2]


def warm(core: DetectionCore) -> list[dict[str, Scored]]:
    return [step(core, i, a=A[i], b=B[i]) for i in range(len(A))]


def test_judged_readings_have_the_device_models_expected_band_in_raw_units(
    core: DetectionCore,
) -> None:
    out = warm(core)
    assert [len(o) for o in out] == [0, 0, 0, 2, 2]  # a window of 3 fills first
    assert core.device_judge.calls == 2
    # Step 3: a visible: 1.0 + 0.5 * 1.0 = 1.5 (z 0); b: hidden 1.0 (z 0) beats 1.0 + 0.75.
    # Step 4: a visible: 1.5 + 0.5 * 1.2 = 2.1 (z 0.2) beats hidden 1.5 (z 1.4);
    #         b hidden 1.0 (z 0.4) beats visible 1.0 + 1.1 = 2.1 (z -1.8).
    worked = {3: {"a": 1.5, "b": 1.0}, 4: {"a": 2.1, "b": 1.0}}
    for i in (3, 4):
        for metric, seq, sib in (("a", A, B), ("b", B, A)):
            expected, _ = by_hand(seq[i - 1], seq[i], sib[i])
            assert expected == pytest.approx(worked[i][metric])
            s = out[i][metric]
            offset, scale = SCALES[metric]
            assert s.expected == pytest.approx(offset + scale * expected, rel=1e-6)
            half = BAND * SIGMA * scale
            assert s.lower == pytest.approx(s.expected - half, rel=1e-6)
            assert s.upper == pytest.approx(s.expected + half, rel=1e-6)
    # The worked raw numbers: a 10 + 2 * 2.1 = 14.2 in [11.2, 17.2]; b 100 + 5 = 105.
    assert out[4]["a"].expected == pytest.approx(14.2, rel=1e-6)
    assert (out[4]["a"].lower, out[4]["a"].upper) == (
        pytest.approx(11.2, rel=1e-6),
        pytest.approx(17.2, rel=1e-6),
    )
    assert out[4]["b"].expected == pytest.approx(105.0, rel=1e-6)
    assert not any(s.is_anomaly for o in out for s in o.values())


def test_a_missing_sibling_leaves_the_reading_to_the_forecaster(core: DetectionCore) -> None:
    warm(core)
    calls = core.device_judge.calls
    # Step 5: a alone. Not judged: its expected is the forecaster's (the last value, raw).
    only_a = step(core, 5, a=2.5)
    assert set(only_a) == {"a"}
    assert core.device_judge.calls == calls
    assert only_a["a"].expected == pytest.approx(raw("a", A[4]), rel=1e-6)
    assert np.isfinite(only_a["a"].score)
    # Step 6: both, but a's window ends at step 5 and b's at step 4: out of step, not judged.
    both = step(core, 6, a=2.6, b=1.3)
    assert set(both) == {"a", "b"}
    assert core.device_judge.calls == calls
    assert both["a"].expected == pytest.approx(raw("a", 2.5), rel=1e-6)
    assert both["b"].expected == pytest.approx(raw("b", B[4]), rel=1e-6)
    # Step 7: both windows end at step 6 again: judged, as by hand.
    again = step(core, 7, a=3.3, b=1.4)
    assert core.device_judge.calls == calls + 1
    a_expected, _ = by_hand(2.6, 3.3, 1.4)  # visible 3.3: z 0
    b_expected, _ = by_hand(1.3, 1.4, 3.3)  # hidden 1.3: z 0.2
    assert (a_expected, b_expected) == (pytest.approx(3.3), pytest.approx(1.3))
    assert again["a"].expected == pytest.approx(raw("a", a_expected), rel=1e-6)
    assert again["b"].expected == pytest.approx(raw("b", b_expected), rel=1e-6)


def test_a_jump_on_one_sensor_does_not_make_its_sibling_anomalous(core: DetectionCore) -> None:
    warm(core)
    # Step 5: a jumps by 40 scaled (80 raw) while b moves by 0.1 as usual.
    out = step(core, 5, a=A[4] + 40.0, b=B[4] + 0.1)
    # b: visible 1.2 + 0.5 * 42.2 (z about -42) vs a hidden: 1.2 (z 0.2): the hidden one.
    b_expected, b_z = by_hand(B[4], B[4] + 0.1, A[4] + 40.0)
    assert b_expected == pytest.approx(B[4]) and b_z == pytest.approx(0.2)
    assert out["b"].expected == pytest.approx(raw("b", B[4]), rel=1e-6)
    assert out["b"].score < 0.1
    assert not out["b"].is_anomaly
    # a: no variant explains it (visible 2.2 + 0.7 = 2.9, hidden 2.2; z about 79).
    _, a_z = by_hand(A[4], A[4] + 40.0, B[4] + 0.1)
    assert a_z == pytest.approx((42.2 - 2.85) / SIGMA)
    assert out["a"].score > 0.99
    assert out["a"].is_anomaly and out["a"].onset


def test_the_jump_alerts_on_a_only_as_a_relation(core: DetectionCore) -> None:
    warm(core)
    res = core.process(
        [
            Reading("d1", "a", T0 + STEP * 5, raw("a", A[4] + 40.0)),
            Reading("d1", "b", T0 + STEP * 5, raw("b", B[4] + 0.1)),
        ],
        now=T0 + STEP * 5 + 1.0,
    )
    assert [(e.state, e.metric, e.signal) for e in res.events] == [("firing", "a", "relation")]


def test_a_device_the_artifact_did_not_scale_is_not_judged(core: DetectionCore) -> None:
    # d2 has the signature's metrics but no trained scales: its scale would be guessed from
    # its first window, which is not the model's units.
    for i in range(len(A)):
        ts = T0 + STEP * i
        res = core.process(
            [Reading("d2", "a", ts, raw("a", A[i])), Reading("d2", "b", ts, raw("b", B[i]))],
            now=ts + 1.0,
        )
        assert not res.dropped
    assert core.device_judge.calls == 0


def test_one_batch_of_every_timestamp_is_judged_as_one_call_each(
    core: DetectionCore, tmp_path: Path
) -> None:
    # Round k of a batch holds the k-th reading of each series: both metrics of step k.
    batch = [
        Reading("d1", m, T0 + STEP * i, raw(m, seq[i]))
        for i in range(len(A))
        for m, seq in (("a", A), ("b", B))
    ]
    res = core.process(batch, now=T0 + STEP * len(A))
    assert core.device_judge.calls == 2
    got = {(s.reading.metric, s.reading.ts): s.expected for s in res.scored}
    separate = DetectionCore(
        load_artifact(write_artifact(tmp_path / "again")),
        LastValueForecaster(),
        DetectionConfig(band_sigmas=BAND),
    )
    want = {
        (s.reading.metric, s.reading.ts): s.expected for o in warm(separate) for s in o.values()
    }
    assert got.keys() == want.keys()
    assert got == pytest.approx(want)
    assert got[("a", T0 + STEP * 4)] == pytest.approx(14.2, rel=1e-6)


def test_judged_readings_last_as_the_mean_of_their_device_z(tmp_path: Path) -> None:
    artifact = load_artifact(write_artifact(tmp_path / "lasting"))
    cfg = DetectionConfig(band_sigmas=BAND, short_window=2, learn_readings=0)
    core = DetectionCore(artifact, LastValueForecaster(), cfg)
    core.scorer.record_parts = True
    lasting = SIGNALS.index("lasting")
    got = []
    for i in range(len(A)):
        step(core, i, a=A[i], b=B[i])  # rows of a round: a, then b (the batch's order)
        if i >= WINDOW_LEN:
            got.append(core.scorer.last_parts[:, lasting].tolist())
    # device z: a 0 then 0.2, b 0 then 0.4 (see the first test); the lasting signal is
    # |mean of the last 2| * sqrt(2), not a learnt long run.
    root2 = math.sqrt(2.0)
    assert got == [
        pytest.approx([0.0, 0.0], abs=1e-9),
        pytest.approx([0.1 * root2, 0.2 * root2], rel=1e-5),
    ]


def test_judged_readings_sustain_their_device_z_across_a_restart(tmp_path: Path) -> None:
    artifact = load_artifact(write_artifact(tmp_path / "sustained"))
    cfg = DetectionConfig(band_sigmas=BAND, learn_readings=0, sustained_window=3)
    sustained = SIGNALS.index("sustained")

    def fresh() -> DetectionCore:
        c = DetectionCore(artifact, LastValueForecaster(), cfg)
        c.scorer.record_parts = True
        return c

    core = fresh()
    for i in range(len(A)):
        step(core, i, a=A[i], b=B[i])
    # device z at step 3: 0 and 0; at step 4: a 0.2, b 0.4. Weight 2 / (3 + 1) = 0.5, so
    # the weighted means are 0.1 and 0.2, against a spread of sqrt(0.5 / 1.5).
    spread = math.sqrt(0.5 / 1.5)
    assert core.scorer.last_parts[:, sustained].tolist() == [
        pytest.approx(0.1 / spread, rel=1e-5),
        pytest.approx(0.2 / spread, rel=1e-5),
    ]
    restored = fresh()
    restored.restore(core.snapshot())
    # Step 5: a moves by W * b now (z 0), b stays (z 0): the means halve.
    for c in (core, restored):
        step(c, len(A), a=A[-1] + W * B[-1], b=B[-1])
    assert restored.scorer.last_parts[:, sustained].tolist() == [
        pytest.approx(0.05 / spread, rel=1e-5),
        pytest.approx(0.1 / spread, rel=1e-5),
    ]
    assert restored.scorer.last_parts.tolist() == core.scorer.last_parts.tolist()


def test_a_signal_the_calibration_does_not_name_stays_off(tmp_path: Path) -> None:
    """An artifact calibrated before `sustained` existed names the others only."""
    directory = write_artifact(tmp_path / "calibrated")
    doc = json.loads((directory / "artifact.json").read_text())
    named = {name: 2.0 for name in SIGNALS if name not in ("range", "flatline", "sustained")}
    doc["alerting"] = {"z_scale": 1.0, "budget": 0.05, "z_scales": named}
    (directory / "artifact.json").write_text(json.dumps(doc))
    core = DetectionCore(load_artifact(directory), LastValueForecaster())
    assert core.signal_scales is not None
    scales = dict(zip(SIGNALS, core.signal_scales.tolist(), strict=True))
    assert scales["sustained"] == 1e6
    assert scales["lasting"] == 2.0 and scales["forecast"] == 2.0
    doc["alerting"]["z_scales"] = {**named, "sustained": 3.0}
    (directory / "artifact.json").write_text(json.dumps(doc))
    core = DetectionCore(load_artifact(directory), LastValueForecaster())
    assert core.signal_scales is not None
    assert core.signal_scales[SIGNALS.index("sustained")] == 3.0
