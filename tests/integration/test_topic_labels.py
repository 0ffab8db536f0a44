"""Topic templates with labels through a real mosquitto into `iotad run` and a real
Alertmanager: `plant/{site}/{line}/{device}/{metric}` puts site and line on the series'
alerts (MQTT payload and Alertmanager labels) and dead letters, never on /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TINY_START_TS, TINY_STEP_S, Mosquitto, publish_all, tiny_value
from tests.deploy.services import ALERTMANAGER, RealAlertmanager, wait_for

pytestmark = pytest.mark.integration

TOPIC = "plant/north/assembly/line2/temperature"
LABELS = {"site": "north", "line": "assembly"}


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[RealAlertmanager]:
    if not ALERTMANAGER:
        pytest.skip("alertmanager binary not found (scripts/system-deps.sh installs it)")
    am = RealAlertmanager(tmp_path)
    yield am
    am.stop()


def stream() -> list[tuple[str, bytes]]:
    """line2/temperature of the training data continued, +20 from step 70 on."""
    rng = np.random.default_rng(7)
    out = []
    for step in range(100):
        i = 1500 + step
        value = (
            tiny_value("line2/temperature", i) + rng.normal(0.0, 0.1) + (20 if step >= 70 else 0)
        )
        ts = TINY_START_TS + i * TINY_STEP_S
        out.append((TOPIC, json.dumps({"ts": ts, "value": value}).encode()))
    return out


def test_labels_reach_alerts_alertmanager_and_dead_letters_but_not_metrics(
    mosquitto: Mosquitto, start_worker, collect, alertmanager: RealAlertmanager
) -> None:
    out = collect("alerts/#", "iotad/deadletter")
    worker = start_worker(
        env={
            "IOTAD_MQTT__TOPICS": "plant/#,sensors/#",
            "IOTAD_MQTT__TOPIC_PATTERNS": (
                "plant/{site}/{line}/{device}/{metric},sensors/{device}/{metric}"
            ),
            "IOTAD_ALERTMANAGER__URL": alertmanager.url,
            "IOTAD_METRICS__SERIES_DEVICES": "line2",
        }
    )
    publish_all(mosquitto.port, [*stream(), (TOPIC, b'{"value": "hot"}')])
    worker.wait_metric("iotad_readings_total", lambda v: v >= 101)

    def alerts(ms: list[Any]) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in ms if m.topic.startswith("alerts/")]

    fired = alerts(out.wait_for(lambda ms: any(a["state"] == "firing" for a in alerts(ms))))
    first = next(a for a in fired if a["state"] == "firing")
    assert (first["device"], first["metric"]) == ("line2", "temperature")
    assert first["labels"] == LABELS

    (am_alert,) = wait_for(
        lambda: [a for a in alertmanager.alerts() if a["labels"].get("device") == "line2"]
    )
    assert am_alert["labels"] == {
        **LABELS,
        "alertname": "SensorAnomaly",
        "device": "line2",
        "metric": "temperature",
        "severity": "warning",
    }

    letters = out.wait_for(lambda ms: any(m.topic == "iotad/deadletter" for m in ms))
    (letter,) = [json.loads(m.payload) for m in letters if m.topic == "iotad/deadletter"]
    assert letter["reason"] == "not_a_number" and letter["labels"] == LABELS

    # Per-reading metrics keep their own labels only: a site would multiply the series.
    _, text = worker.get("/metrics")
    assert 'iotad_series_value{device="line2",metric="temperature"}' in text
    assert "north" not in text and "assembly" not in text
