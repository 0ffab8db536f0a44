"""Telegraf JSON and InfluxDB line protocol through a real mosquitto into `iotad run`:
the formats chosen by topic filter from the environment, every field counted, bad ones
dead-lettered with their reason."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_START_TS, TINY_STEP_S, Mosquitto, publish_all

pytestmark = pytest.mark.integration

ENV = {
    "IOTAD_MQTT__TOPICS": "sensors/#,telegraf/#,influx/#",
    "IOTAD_MQTT__TOPIC_PATTERNS": "sensors/{device}/{metric},sensors/{device},telegraf/{device}",
    "IOTAD_PAYLOAD__FORMATS": json.dumps({"telegraf/#": "telegraf", "influx/#": "influx"}),
    "IOTAD_PAYLOAD__DEVICE_TAGS": "device,host",
}


def test_telegraf_and_line_protocol_are_ingested_and_counted(
    mosquitto: Mosquitto, start_worker, collect
) -> None:
    letters = collect("iotad/deadletter")
    worker = start_worker(env=ENV)
    ts = int(TINY_START_TS + 20_000 * TINY_STEP_S)

    def metric(host: str, k: int) -> dict[str, object]:
        return {
            "name": "plc",
            "tags": {"host": host},
            "fields": {"temp": 20.0 + k, "rpm": 3000 + k},
            "timestamp": ts + k,
        }

    telegraf_single = metric("press-1", 0)  # 2 readings
    telegraf_batch = {"metrics": [metric("press-2", k) for k in range(5)]}  # 10 readings
    # device from the topic (telegraf/{device}); one string field: not_a_number
    telegraf_topic = {"name": "plc", "fields": {"temp": 1.5, "mode": "run"}, "timestamp": ts * 1000}
    lines = "\n".join(
        f"plc,host=press-3 temp={20.5 + k},count={k}i {(ts + k) * 10**9}" for k in range(4)
    )  # 8 readings
    bad_lines = 'plc,host=press-3 temp=1.0\nthis is not line protocol\nplc state="run"'
    publish_all(
        mosquitto.port,
        [
            ("telegraf/gw", json.dumps(telegraf_single)),
            ("telegraf/gw", json.dumps(telegraf_batch)),
            ("telegraf/press-4", json.dumps(telegraf_topic)),
            ("influx/gw", lines),
            ("influx/gw", bad_lines),
        ],
    )
    published = 2 + 10 + 2 + 8 + 3
    worker.wait_metric("iotad_readings_total", lambda v: v >= published)
    assert worker.sample("iotad_messages_total") == 5
    assert worker.sample("iotad_readings_total") == published
    assert worker.sample("iotad_readings_accepted_total") == 2 + 10 + 1 + 8 + 1
    assert worker.sample("iotad_readings_rejected_total", reason="not_a_number") == 1
    assert worker.sample("iotad_readings_rejected_total", reason="malformed_line") == 1
    # plc,state="run" has no host tag and influx/gw names no device
    assert worker.sample("iotad_readings_rejected_total", reason="missing_field") == 1
    dead = letters.wait_for(lambda ms: len(ms) >= 3)
    reasons = sorted(json.loads(m.payload)["reason"] for m in dead)
    assert reasons == ["malformed_line", "missing_field", "not_a_number"]
