"""AlertmanagerSink against a real Alertmanager binary (Debian's prometheus-alertmanager).

What the v2 API does, checked here: a posted firing alert is listed by ``GET /api/v2/alerts``
with ``status.state == "active"``; once a resolved alert (``endsAt`` in the past) is merged
into it, it is no longer listed at all, whatever the ``active`` filter says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from detector.engine.events import AlertEvent
from detector.worker.alertmanager import AlertmanagerSink
from tests.deploy.services import ALERTMANAGER, RealAlertmanager, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[RealAlertmanager]:
    if not ALERTMANAGER:
        pytest.skip("alertmanager binary not found (scripts/system-deps.sh installs it)")
    am = RealAlertmanager(tmp_path)
    yield am
    am.stop()


def event(state: str, ts: float, device: str = "press-7") -> AlertEvent:
    return AlertEvent(
        id=f"{device}-ep1-{state}",
        state=state,  # type: ignore[arg-type]
        device=device,
        metric="temp",
        ts=ts,
        value=93.5,
        expected=71.0,
        lower=65.0,
        upper=77.0,
        score=0.93,
        threshold=0.5,
    )


def ours(alerts: list[dict[str, Any]], device: str = "press-7") -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("device") == device]


def test_firing_then_resolved(alertmanager: RealAlertmanager) -> None:
    registry = CollectorRegistry()
    sink = AlertmanagerSink(alertmanager.url, "http://worker:9108/", registry=registry)
    t0 = time.time()
    sink.send(event("firing", t0 - 5))

    (alert,) = wait_for(lambda: ours(alertmanager.alerts()))
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == {
        "alertname": "SensorAnomaly",
        "device": "press-7",
        "metric": "temp",
        "severity": "warning",
    }
    assert alert["annotations"]["upper"] == "77"
    assert alert["annotations"]["alert_id"] == "press-7-ep1-firing"
    assert alert["generatorURL"] == "http://worker:9108/"

    sink.send(event("resolved", time.time()))
    wait_for(lambda: not ours(alertmanager.alerts()))
    # Resolved alerts are not listed even when inactive ones are asked for.
    assert not ours(alertmanager.alerts(active="false"))
    assert sink.close()
    assert registry.get_sample_value("iotad_alertmanager_sent_total") == 2
    errors = {"url": alertmanager.url}
    assert registry.get_sample_value("iotad_alertmanager_errors_total", errors) == 0


def test_reposts_push_ends_at_forward(alertmanager: RealAlertmanager) -> None:
    sink = AlertmanagerSink(alertmanager.url, "http://worker:9108/", resend_interval_s=0.3)
    sink.send(event("firing", time.time()))
    (first,) = wait_for(lambda: ours(alertmanager.alerts()))
    (later,) = wait_for(
        lambda: [a for a in ours(alertmanager.alerts()) if a["endsAt"] > first["endsAt"]]
    )
    assert later["startsAt"] == first["startsAt"]
    assert later["fingerprint"] == first["fingerprint"]
    sink.close()


def test_delivers_once_alertmanager_comes_up(tmp_path: Path) -> None:
    if not ALERTMANAGER:
        pytest.skip("alertmanager binary not found (scripts/system-deps.sh installs it)")
    port = free_port()
    registry = CollectorRegistry()
    sink = AlertmanagerSink(
        f"http://127.0.0.1:{port}",
        "http://worker:9108/",
        registry=registry,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    sink.send(event("firing", time.time(), device="late"))
    errors = {"url": f"http://127.0.0.1:{port}"}
    wait_for(
        lambda: (registry.get_sample_value("iotad_alertmanager_errors_total", errors) or 0) >= 1
    )
    am = RealAlertmanager(tmp_path, port=port)
    try:
        wait_for(lambda: ours(am.alerts(), "late"))
        assert sink.close()
    finally:
        am.stop()
