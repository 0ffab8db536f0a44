"""The factory benchmark's replay and `iotad run` fed through mosquitto fire the same alerts.

A small labelled fleet is simulated and a small LSTM trained on its history, as the benchmark
does. The primed history and the stream are then replayed twice with that artifact: offline
through `training.factory_eval.replay` (one `process` call per timestamp), and live as
``sensors/{device}`` messages with all of a device's metrics (QoS 1, one message per device
and timestamp) into `iotad run`. The worker's firing alerts must be the replay's, each
fired by the same signal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, WorkerProcess, publish_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANG_GUARD_S = 600.0  # only so a broken worker cannot hang the suite; nothing is timed


def test_worker_fires_the_alerts_the_factory_replay_fires(
    mosquitto: Mosquitto, start_worker, collect, tmp_path: Path
) -> None:
    from detector.engine.core import DetectionCore
    from detector.engine.detection_config import DetectionConfig
    from training.factory_eval import batches, fit, replay
    from training.factory_scenario import SHAPES, build_scenario

    scenario = build_scenario(
        SHAPES["small"], 0, history_days=1.0, stream_days=0.5, faults_per_kind=1
    )
    small_model = {"window": 16, "units": [8], "epochs": 2, "max_windows": 2048}
    artifact, forecaster, _ = fit("lstm", scenario, small_model, tmp_path / "model")
    primed = 240  # the last four hours of history
    offline = replay(DetectionCore(artifact, forecaster, DetectionConfig()), scenario, primed)
    expected = {
        (a.device, a.metric, a.ts, a.signal) for a in [*offline.priming_alerts, *offline.alerts]
    }
    assert offline.alerts and offline.dropped == 0

    alerts = collect("alerts/#")
    worker: WorkerProcess = start_worker(env={"IOTAD_MODEL__PATH": str(artifact.directory)})
    messages = []
    readings = 0
    for _, _, ts, batch in batches(scenario, primed):
        by_device: dict[str, dict[str, float]] = {}
        for r in batch:
            by_device.setdefault(r.device, {})[r.metric] = r.value
        for device, values in by_device.items():
            messages.append((f"sensors/{device}", json.dumps({"ts": ts, "values": values})))
            readings += len(values)
    assert readings == offline.readings
    publish_all(mosquitto.port, messages, timeout_s=HANG_GUARD_S)

    worker.wait_metric("iotad_readings_total", lambda v: v == readings, HANG_GUARD_S)

    def firing(ms: list) -> set[tuple[str, str, float, str]]:
        docs = [json.loads(m.payload) for m in ms]
        return {
            (a["device"], a["metric"], a["ts"], a["signal"]) for a in docs if a["state"] == "firing"
        }

    # Every reading is in; wait until the alerts the replay fired have come (a missing one
    # fails at the hang guard), then nothing more may have fired.
    got = firing(alerts.wait_for(lambda ms: firing(ms) >= expected, HANG_GUARD_S))
    assert got == expected
    assert worker.sample("iotad_alert_events_total", state="firing") == len(expected)
    assert worker.sample("iotad_readings_accepted_total") == readings
