"""The worker killed or restarted mid-stream: no reading lost, state carried over.

- SIGKILL mid-stream, restart with the same id: the persistent session redelivers what was
  not acknowledged. Every published ``(device, metric, ts)`` is shown to have been taken by
  one of the two runs (scored on the opt-in score stream, warming, or recognised as a repeat
  on the dead-letter topic).
- Checkpoints: a worker restarted with ``IOTAD_CHECKPOINT__PATH`` scores its first reading at
  once, and each score equals the score the detection core gives without any restart.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_SERIES, Collector, Mosquitto, WorkerProcess, publish_all
from tests.integration.test_reliability_broker import (
    PacedPublisher,
    numbered,
    rejected,
    series_ts,
    wait_until,
)

pytestmark = pytest.mark.integration

WINDOW = 16  # the tiny artifact's window


def scored_keys(messages: list) -> set[tuple[str, str, float]]:
    """``(device, metric, ts)`` of score-stream messages."""
    out = set()
    for m in messages:
        _, device, metric = m.topic.split("/")
        out.add((device, metric, float(json.loads(m.payload)["ts"])))
    return out


def by_series(keys: set[tuple[str, str, float]]) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for device, metric, ts in keys:
        out.setdefault((device, metric), []).append(ts)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("checkpoint", [False, True], ids=["session-only", "with-checkpoint"])
def test_sigkill_mid_stream_loses_no_reading(
    mosquitto: Mosquitto, start_worker, tmp_path: Path, checkpoint: bool
) -> None:
    stream = numbered(300, TINY_SERIES)  # 900 readings at 300/s
    published = series_ts(stream)
    out = Collector(mosquitto.port, ["scores/#", "iotad/deadletter"])
    env = {"IOTAD_OUTPUT__SCORES": "true"}
    if checkpoint:
        env |= {
            "IOTAD_CHECKPOINT__PATH": str(tmp_path / "state.npz"),
            "IOTAD_CHECKPOINT__INTERVAL_S": "0.3",
        }
    first = start_worker(env=env, worker_id="w-kill")
    pub = PacedPublisher(mosquitto.port, stream, rate=300)
    pub.start()
    try:
        wait_until(lambda: len(out.snapshot("scores/")) >= 250, what="first run scoring")
        if checkpoint:
            wait_until((tmp_path / "state.npz").exists, what="a checkpoint")
        # Killed mid-batch: frozen first, so the broker has sent it messages it never acked.
        first.signal(signal.SIGSTOP)
        time.sleep(0.5)
        first.signal(signal.SIGKILL)
        first.wait()
        # What the first run published reaches the collector before a barrier published
        # now: the dead worker's last packets are already in the broker's socket buffer.
        barrier = "scores/zz-barrier/first-run"
        publish_all(mosquitto.port, [(barrier, b"{}")])
        wait_until(lambda: any(m.topic == barrier for m in out.snapshot()), what="barrier")
        first_scored = scored_keys([m for m in out.snapshot("scores/") if m.topic != barrier])
        n_first = len(out.snapshot())
        second = start_worker(env=env, worker_id="w-kill")
        pub.wait_acked()
    finally:
        pub.close()
    second.wait_metric("iotad_readings_accepted_total", lambda v: v > 0)
    deadline = time.monotonic() + 30
    while missing := _missing(out, n_first, first_scored, published, second, checkpoint):
        assert time.monotonic() < deadline, f"{len(missing)} readings lost: {sorted(missing)[:5]}"
        time.sleep(0.1)
    # The rules that make this accounting sound.
    assert set(rejected(second)) <= {"duplicate", "out_of_order"}
    if checkpoint:
        # Restored: nothing warms again; repeats of checkpointed readings are dropped.
        assert second.sample("iotad_series_restored") == len(TINY_SERIES)
        assert second.sample("iotad_readings_warming_total") == 0
    else:
        # Cold: each series warms again on the WINDOW readings before its first score (the
        # session redelivers in order: nothing is out of order).
        assert second.sample("iotad_readings_rejected_total", reason="out_of_order") == 0
        assert second.sample("iotad_readings_warming_total") == WINDOW * len(TINY_SERIES)
    out.close()


def _missing(
    out: Collector,
    n_first: int,
    first_scored: set,
    published: set,
    second: WorkerProcess,
    checkpoint: bool,
) -> set:
    """Published readings not (yet) shown to be taken by one of the two runs."""
    later = out.snapshot()[n_first:]
    second_scored = scored_keys([m for m in later if m.topic.startswith("scores/")])
    repeats = set()
    for m in later:
        if m.topic == "iotad/deadletter":
            r = json.loads(json.loads(m.payload)["payload"])
            repeats.add((r["device"], r["metric"], r["ts"]))
    assert repeats <= published
    # The first run warmed each series on its first WINDOW readings.
    warm = {
        (*series, ts) for series, stamps in by_series(published).items() for ts in stamps[:WINDOW]
    }
    if not checkpoint:
        # A cold second run warmed each series on the WINDOW readings before its first score.
        stamps_all = by_series(published)
        for series, stamps in by_series(second_scored).items():
            before = [t for t in stamps_all[series] if t < stamps[0]]
            warm |= {(*series, ts) for ts in before[-WINDOW:]}
    return published - (first_scored | warm | second_scored | repeats)


def test_restart_from_checkpoint_scores_like_no_restart(
    mosquitto: Mosquitto, start_worker, collect, tmp_path: Path, tiny_artifact: Path
) -> None:
    stream = numbered(70, TINY_SERIES)
    cut = 40 * len(TINY_SERIES)
    state = tmp_path / "state.npz"
    env = {"IOTAD_CHECKPOINT__PATH": str(state), "IOTAD_OUTPUT__SCORES": "true"}
    first = start_worker(env=env, worker_id="w-ckpt")
    publish_all(mosquitto.port, stream[:cut])
    first.wait_metric("iotad_readings_accepted_total", lambda v: v >= cut)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert "checkpoint of 3 series written" in first.log()

    out = collect("scores/#")
    second = start_worker(env=env, worker_id="w-ckpt")
    assert second.sample("iotad_series_restored") == len(TINY_SERIES)
    assert "restored 3 series from checkpoint" in second.log()
    publish_all(mosquitto.port, stream[cut:])
    n_after = len(stream) - cut
    msgs = out.wait_for(lambda ms: len(ms) >= n_after)
    assert second.sample("iotad_readings_warming_total") == 0  # scored from the first reading

    got = {}
    for m in msgs:
        doc = json.loads(m.payload)
        got[(m.topic.removeprefix("scores/"), doc["ts"])] = (doc["score"], doc["expected"])
    want = straight_scores(tiny_artifact, stream)
    after = {k: v for k, v in want.items() if k in got}
    assert len(after) == n_after == len(got)
    keys = sorted(after)
    np.testing.assert_allclose(
        [got[k] for k in keys], [after[k] for k in keys], rtol=1e-5, atol=1e-7
    )
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def straight_scores(artifact_dir: Path, messages: list) -> dict:
    """``{(series, ts): (score, expected)}`` of the core fed the whole stream, no restart."""
    from detector.engine.artifact import load_artifact
    from detector.engine.core import DetectionCore
    from detector.engine.detection_config import DetectionConfig
    from detector.engine.forecaster import LiteRTForecaster
    from detector.worker.payloads import PayloadDecoder

    artifact = load_artifact(artifact_dir)
    core = DetectionCore(artifact, LiteRTForecaster.from_artifact(artifact), DetectionConfig())
    decoder = PayloadDecoder()
    out = {}
    for topic, payload in messages:
        for s in core.process(decoder.decode(topic, payload).readings).scored:
            out[(s.reading.key, s.reading.ts)] = (s.score, s.expected)
    return out


def test_corrupt_checkpoint_is_one_line_and_a_cold_start(
    mosquitto: Mosquitto, start_worker, tmp_path: Path
) -> None:
    from detector.worker.checkpoint import load_state

    state = tmp_path / "state.npz"
    state.write_bytes(b"PK\x03\x04 not really a zip")
    worker = start_worker(env={"IOTAD_CHECKPOINT__PATH": str(state)}, worker_id="w-corrupt")
    warnings = [line for line in worker.log().splitlines() if "iotad.checkpoint" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings
    assert "ignored, starting cold" in warnings[0]
    assert worker.sample("iotad_checkpoint_failures_total", op="restore") == 1
    publish_all(mosquitto.port, numbered(20))
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 20)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert "Traceback" not in worker.log()
    # Replaced by a good one on the way out.
    assert load_state(state)["keys"].tolist() == ["line1/temperature"]
