"""`iotad run` end to end: readings in through mosquitto, alerts, dead letters, metrics out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import (
    TINY_SERIES,
    TINY_START_TS,
    TINY_STEP_S,
    Collector,
    Mosquitto,
    WorkerProcess,
    publish_all,
    tiny_value,
)

pytestmark = pytest.mark.integration

FIRST_STEP = 1500  # continue where the training data ended
STEPS = 100
SPIKE_AT = 60  # line1/temperature: one reading +12
SHIFT_AT = 70  # line2/temperature: +20 from here on


def stream() -> list[tuple[str, bytes]]:
    """The three training series continued, with a spike and a level shift injected."""
    rng = np.random.default_rng(7)
    out = []
    for step in range(STEPS):
        i = FIRST_STEP + step
        ts = TINY_START_TS + i * TINY_STEP_S
        for key in TINY_SERIES:
            value = tiny_value(key, i) + rng.normal(0.0, 0.1)
            if key == "line1/temperature" and step == SPIKE_AT:
                value += 12.0
            if key == "line2/temperature" and step >= SHIFT_AT:
                value += 20.0
            out.append((f"sensors/{key}", json.dumps({"ts": ts, "value": value}).encode()))
    return out


BAD = [
    # (topic, payload, reason)
    ("sensors/line1/temperature", b"{not json", "malformed_json"),
    ("sensors/line1/temperature", b'{"ts": 1700000000, "value": "hot"}', "not_a_number"),
    ("sensors/line1/temperature", b"NaN", "non_finite"),
    ("sensors/line3", b"42", "missing_field"),
    ("sensors/a/b/c", b"1", "bad_topic"),
    ("sensors/line1/temperature", b'{"ts": 4102444800, "value": 1}', "future_ts"),
    ("sensors/line1/temperature", b"x" * 70_000, "oversize"),
]


def test_spike_and_level_shift_raise_alerts_and_everything_is_counted(
    mosquitto: Mosquitto, start_worker, collect, tiny_artifact
) -> None:
    out = collect("alerts/#", "iotad/deadletter")
    worker: WorkerProcess = start_worker()
    good = stream()
    publish_all(mosquitto.port, good[: len(good) // 2] + [(t, p) for t, p, _ in BAD])
    publish_all(mosquitto.port, good[len(good) // 2 :])
    published = len(good) + len(BAD)

    worker.wait_metric("iotad_readings_total", lambda v: v >= published)
    m = worker.metrics()
    accepted = m[("iotad_readings_accepted_total", ())]
    rejected = sum(v for (name, _), v in m.items() if name == "iotad_readings_rejected_total")
    assert accepted + rejected == published
    assert m[("iotad_readings_total", ())] == published
    assert m[("iotad_messages_total", ())] == published
    assert accepted == len(good)
    for _, _, reason in BAD:
        assert m[("iotad_readings_rejected_total", (("reason", reason),))] == 1, reason
    assert m[("iotad_readings_scored_total", ())] + m[("iotad_readings_warming_total", ())] == (
        len(good)
    )
    assert m[("iotad_mqtt_connected", ())] == 1
    assert m[("iotad_ready", ())] == 1

    # Dead letters: one per bad payload, with its reason.
    letters = out.wait_for(lambda ms: sum(x.topic == "iotad/deadletter" for x in ms) >= len(BAD))
    dead = [json.loads(x.payload) for x in letters if x.topic == "iotad/deadletter"]
    assert sorted(d["reason"] for d in dead) == sorted(r for *_, r in BAD)
    for d in dead:
        assert d["worker"] == worker.worker_id
        assert d["detail"] and d["topic"]
    oversize = next(d for d in dead if d["reason"] == "oversize")
    assert oversize["truncated"] is True and len(oversize["payload"]) == 1024

    # Alerts: exactly the events the detection core decides for this stream (replayed here
    # offline with the same artifact and settings), each published once on its series' topic.
    expected = expected_events(tiny_artifact, good)
    assert expected, "the injected spike and level shift raise no event at all"
    assert {(e.device, e.metric) for e in expected} >= {
        ("line1", "temperature"),
        ("line2", "temperature"),
    }

    def alerts(ms: list) -> list[dict]:
        return [json.loads(x.payload) for x in ms if x.topic.startswith("alerts/")]

    # Nothing more may come: once the worker has settled, its count of alert events is
    # final, and the collector has exactly that many alerts once they have all arrived.
    worker.settle(mosquitto.port)
    events = sum(worker.sample("iotad_alert_events_total", state=s) for s in ("firing", "resolved"))
    msgs = out.wait_for(lambda ms: len(alerts(ms)) >= events)
    got = alerts(out.snapshot())
    assert len(got) == events
    assert sorted((a["device"], a["metric"], a["state"], a["ts"], a["id"]) for a in got) == sorted(
        (e.device, e.metric, e.state, e.ts, e.id) for e in expected
    )
    for a in got:
        assert f"alerts/{a['device']}/{a['metric']}" in {x.topic for x in msgs}
        for field in (
            "id",
            "state",
            "device",
            "metric",
            "ts",
            "value",
            "expected",
            "lower",
            "upper",
            "score",
            "threshold",
            "model",
            "worker",
        ):
            assert field in a, field
        assert a["worker"] == worker.worker_id and a["model"]
    firing = sum(e.state == "firing" for e in expected)
    worker.wait_metric("iotad_series_active", lambda v: v == 3)  # refreshed once a second
    assert worker.sample("iotad_alert_events_total", state="firing") == firing
    assert worker.sample("iotad_alert_events_total", state="resolved") == len(expected) - firing
    assert worker.sample("iotad_anomalies_total") >= firing


def expected_events(artifact_dir, messages: list[tuple[str, bytes]]) -> list:
    """The core's alert events for `messages`, one reading at a time (the worker batches
    differently; per-series results must not depend on batching)."""
    from detector.engine.artifact import load_artifact
    from detector.engine.core import DetectionCore
    from detector.engine.detection_config import DetectionConfig
    from detector.engine.forecaster import LiteRTForecaster
    from detector.worker.payloads import PayloadDecoder

    artifact = load_artifact(artifact_dir)
    core = DetectionCore(artifact, LiteRTForecaster.from_artifact(artifact), DetectionConfig())
    decoder = PayloadDecoder()
    events = []
    for topic, payload in messages:
        events.extend(core.process(decoder.decode(topic, payload).readings).events)
    return events


def test_batched_gateway_payloads_count_every_reading(mosquitto: Mosquitto, start_worker) -> None:
    worker = start_worker()
    ts0 = TINY_START_TS + 10_000 * TINY_STEP_S
    gateway = [
        {"ts": ts0 + k, "device": f"gw-dev{k % 4}", "metric": "temp", "value": float(k)}
        for k in range(40)
    ]
    gateway.append({"ts": ts0, "device": "bad/name", "metric": "temp", "value": 1})
    gateway.append({"ts": ts0, "device": "gw-dev0", "metric": "temp", "value": "x"})
    values = {"ts": ts0, "values": {"temp": 1.0, "rpm": 3000, "bad": "x"}}
    publish_all(
        mosquitto.port,
        [("sensors/gateway-1", json.dumps(gateway)), ("sensors/press-9", json.dumps(values))],
    )
    published = len(gateway) + 3
    worker.wait_metric("iotad_readings_total", lambda v: v >= published)
    assert worker.sample("iotad_messages_total") == 2
    assert worker.sample("iotad_readings_total") == published
    assert worker.sample("iotad_readings_accepted_total") == 40 + 2
    assert worker.sample("iotad_readings_rejected_total", reason="bad_name") == 1
    assert worker.sample("iotad_readings_rejected_total", reason="not_a_number") == 2


def test_duplicates_and_out_of_order_are_dropped_by_the_core(
    mosquitto: Mosquitto, start_worker, collect
) -> None:
    out = collect("iotad/deadletter")
    worker = start_worker()
    t = TINY_START_TS
    msgs = [
        ("sensors/dup/m", json.dumps({"ts": t + 2, "value": 1.0})),
        ("sensors/dup/m", json.dumps({"ts": t + 2, "value": 1.0})),  # duplicate
        ("sensors/dup/m", json.dumps({"ts": t + 1, "value": 5.0})),  # out of order
        ("sensors/dup/m", json.dumps({"ts": t + 3, "value": 2.0})),
    ]
    publish_all(mosquitto.port, msgs)
    worker.wait_metric("iotad_readings_total", lambda v: v >= 4)
    assert worker.sample("iotad_readings_accepted_total") == 2
    assert worker.sample("iotad_readings_rejected_total", reason="duplicate") == 1
    assert worker.sample("iotad_readings_rejected_total", reason="out_of_order") == 1
    letters = out.wait_for(lambda ms: len(ms) >= 2)
    dead = sorted(json.loads(x.payload)["reason"] for x in letters)
    assert dead == ["duplicate", "out_of_order"]
    assert all(json.loads(x.payload)["topic"] == "sensors/dup/m" for x in letters)


def test_score_stream_is_opt_in(mosquitto: Mosquitto, start_worker, collect) -> None:
    out: Collector = collect("scores/#")
    worker = start_worker(args=["--scores"])
    good = [(t, p) for t, p in stream() if t == "sensors/line1/vibration"][:30]
    publish_all(mosquitto.port, good)
    worker.wait_metric("iotad_readings_total", lambda v: v >= 30)
    window = 16
    msgs = out.wait_for(lambda ms: len(ms) >= 30 - window)
    assert {m.topic for m in msgs} == {"scores/line1/vibration"}
    first = json.loads(msgs[0].payload)
    assert set(first) >= {"ts", "value", "expected", "lower", "upper", "score"}
    assert first["lower"] <= first["expected"] <= first["upper"]


def test_no_score_stream_by_default(mosquitto: Mosquitto, start_worker, collect) -> None:
    out = collect("scores/#")
    worker = start_worker()
    good = [(t, p) for t, p in stream() if t == "sensors/line1/vibration"][:30]
    publish_all(mosquitto.port, good)
    worker.wait_metric("iotad_readings_scored_total", lambda v: v >= 30 - 16)
    assert out.snapshot() == []


def test_mqtt_311(mosquitto: Mosquitto, start_worker) -> None:
    worker = start_worker(args=["--mqtt-version", "3.1.1"])
    publish_all(mosquitto.port, [(t, p) for t, p in stream()[:60]])
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= 60)
