"""The worker with rules: kept-back alerts are counted, never published; reloads between
batches on the detection thread."""

from __future__ import annotations

import json
import threading

from prometheus_client import CollectorRegistry

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.rules import Rule, RuleSet
from detector.worker.alerts import MqttAlertSink
from detector.worker.deadletter import DeadLetterPublisher
from detector.worker.ingest import Intake
from detector.worker.loop import Worker
from detector.worker.metrics import WorkerMetrics
from detector.worker.payloads import PayloadDecoder
from tests.detector.core_fixtures import LastValueForecaster, make_artifact
from tests.detector.worker.test_worker import T0, FakeBroker, feed

SPIKE = [0.0, 0.5, -0.5] * 4 + [50.0] + [0.0, 0.5, -0.5] * 4


def make(broker: FakeBroker, registry: CollectorRegistry, ruleset: RuleSet, **kw) -> Worker:  # type: ignore[no-untyped-def]
    known = {k: (0.0, 1.0) for k in ("d1/temp", "d2/temp")}
    core = DetectionCore(
        make_artifact(window_len=3, per_series=known, errors=known),
        LastValueForecaster(),
        DetectionConfig(resolve_after=3, quiet_period=0),
        ruleset,
    )
    return Worker(
        core,
        WorkerMetrics(registry),
        Intake(PayloadDecoder(clock=lambda: T0 + 10_000), queue_size=1000, max_batch=1000),
        acker=broker,
        sinks=[MqttAlertSink(broker, model_version="m1", worker_id="w1")],
        deadletter=DeadLetterPublisher(broker, worker_id="w1"),
        max_batch=1000,
        linger_s=0.0,
        linger_above_msgs_per_s=1e9,
        **kw,
    )


def spikes(device: str) -> list[tuple[str, bytes]]:
    return [
        (f"sensors/{device}/temp", json.dumps({"ts": T0 + 60 * i, "value": v}).encode())
        for i, v in enumerate(SPIKE)
    ]


def test_a_muted_alert_is_counted_and_not_published() -> None:
    broker, registry = FakeBroker(), CollectorRegistry()
    worker = make(broker, registry, RuleSet([Rule(device="d1", mute=True, severity="page")]))
    feed(worker, spikes("d1") + spikes("d2"))
    alerts = broker.on("alerts/")
    assert {(a["device"], a["state"]) for a in alerts} == {("d2", "firing"), ("d2", "resolved")}
    assert registry.get_sample_value("iotad_alerts_suppressed_total", {"reason": "mute"}) == 1
    assert (
        registry.get_sample_value("iotad_alerts_suppressed_total", {"reason": "maintenance"}) == 0
    )
    # Scored and counted like any reading: the muted spike is an anomaly.
    assert registry.get_sample_value("iotad_anomalies_total") >= 2
    assert registry.get_sample_value("iotad_alert_events_total", {"state": "firing"}) == 1
    worker.release_held()  # the alerts are confirmed: every message is acknowledged
    assert len(broker.acked) == 2 * len(SPIKE)


def test_alert_json_carries_severity_and_labels() -> None:
    broker, registry = FakeBroker(), CollectorRegistry()
    rules = RuleSet([Rule(device="d2", severity="critical", labels={"team": "line2"})])
    feed(make(broker, registry, rules), spikes("d2"))
    firing = next(a for a in broker.on("alerts/") if a["state"] == "firing")
    assert firing["severity"] == "critical" and firing["labels"] == {"team": "line2"}


class Reloads:
    """A rules reloader that records which thread polls it."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.polled = threading.Event()

    def poll(self) -> bool:
        self.threads.append(threading.current_thread().name)
        self.polled.set()
        return False


def test_the_detection_thread_polls_the_rules_between_batches() -> None:
    broker, registry = FakeBroker(), CollectorRegistry()
    reloads = Reloads()
    worker = make(broker, registry, RuleSet(), rules=reloads)
    worker.start()
    try:
        assert reloads.polled.wait(30)
    finally:
        worker.stop()
    assert set(reloads.threads) == {"iotad-detection"}
