"""AlertmanagerSink against a tiny local HTTP server: payload shape, retries, drops, re-posts.

Not marked `integration`: the server is an in-process `http.server` on 127.0.0.1 and every
test finishes in well under a second, so these run in the fast suite too.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from detector.engine.events import AlertEvent
from detector.worker.alertmanager import (
    AlertmanagerSettings,
    AlertmanagerSink,
    alert_payload,
    iso_utc,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class FakeAlertmanager:
    """Records every POST body; answers with scripted status codes (then 200)."""

    def __init__(self, port: int = 0, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.statuses = list(statuses or [])
        self.location: str | None = None  # sent with a 3xx status
        self.gets: list[tuple[str, dict[str, str]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()  # a request reached the server (held or not)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.arrived.set()
                outer.hold.wait(30)
                status = outer.statuses.pop(0) if outer.statuses else 200
                outer.requests.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(status)
                if outer.location and 300 <= status < 400:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                outer.gets.append((self.path, dict(self.headers)))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [a for _, _, body in self.requests for a in body]

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def am() -> Iterator[FakeAlertmanager]:
    server = FakeAlertmanager()
    yield server
    server.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def event(state: str = "firing", ts: float = T0, **kw: Any) -> AlertEvent:
    fields: dict[str, Any] = dict(
        id="ep-1-" + state,
        state=state,
        device="press-7",
        metric="temp",
        ts=ts,
        value=93.5,
        expected=71.25,
        lower=65.0,
        upper=77.5,
        score=0.93,
        threshold=0.5,
    )
    fields.update(kw)
    return AlertEvent(**fields)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_iso_utc_is_rfc3339_with_z() -> None:
    assert iso_utc(T0) == "2023-11-14T22:13:20.000Z"
    assert iso_utc(T0 + 0.25) == "2023-11-14T22:13:20.250Z"


def test_firing_payload_shape(am: FakeAlertmanager, registry: CollectorRegistry) -> None:
    now = T0 + 2.0
    sink = AlertmanagerSink(
        am.url + "/",
        "http://worker-1:9108/",
        severity="critical",
        labels={"plant": "north"},
        resend_interval_s=60,
        registry=registry,
        clock=lambda: now,
    )
    sink.send(event())
    assert sink.close(timeout_s=5)

    assert len(am.requests) == 1
    path, headers, body = am.requests[0]
    assert path == "/api/v2/alerts"
    assert headers["Content-Type"] == "application/json"
    assert body == [
        {
            "labels": {
                "plant": "north",
                "alertname": "SensorAnomaly",
                "device": "press-7",
                "metric": "temp",
                "severity": "critical",
            },
            "annotations": {
                "summary": "press-7/temp = 93.5 is outside its expected band [65, 77.5] "
                "(score 0.93 > threshold 0.5, forecast)",
                "value": "93.5",
                "expected": "71.25",
                "lower": "65",
                "upper": "77.5",
                "score": "0.93",
                "threshold": "0.5",
                "alert_id": "ep-1-firing",
                "signal": "forecast",
            },
            "startsAt": "2023-11-14T22:13:20.000Z",
            # ttl defaults to 4 resend intervals after the post: T0 + 2 s + 240 s
            "endsAt": "2023-11-14T22:17:22.000Z",
            "generatorURL": "http://worker-1:9108/",
        }
    ]
    assert sample(registry, "iotad_alertmanager_sent_total") == 1
    # Exported at 0 from the start, labelled with the URL as configured minus the last '/'.
    assert registry.get_sample_value("iotad_alertmanager_errors_total", {"url": am.url}) == 0


def test_resolved_keeps_labels_and_episode_start(
    am: FakeAlertmanager, registry: CollectorRegistry
) -> None:
    sink = AlertmanagerSink(am.url, "http://w:9108/", registry=registry, clock=lambda: T0 + 60)
    sink.send(event("firing", ts=T0))
    sink.send(event("resolved", ts=T0 + 30, value=70.0, score=0.5))
    assert sink.close()

    firing, resolved = am.alerts
    assert resolved["labels"] == firing["labels"]  # same identity in Alertmanager
    assert resolved["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert resolved["endsAt"] == "2023-11-14T22:13:50.000Z"
    assert resolved["annotations"]["summary"] == "press-7/temp is back within its expected band"
    assert resolved["annotations"]["value"] == "70"
    assert sample(registry, "iotad_alertmanager_active_alerts") == 0


def test_resolved_keeps_the_labels_it_fired_with_when_the_rules_changed(
    am: FakeAlertmanager, registry: CollectorRegistry
) -> None:
    sink = AlertmanagerSink(am.url, "http://w:9108/", registry=registry, clock=lambda: T0 + 60)
    sink.send(event("firing", ts=T0, severity="critical", labels={"team": "a"}))
    # The rules were reloaded in between: the series now has other labels.
    sink.send(event("resolved", ts=T0 + 30, severity="info", labels={"team": "b"}))
    assert sink.close()

    firing, resolved = am.alerts
    assert firing["labels"]["severity"] == "critical" and firing["labels"]["team"] == "a"
    assert resolved["labels"] == firing["labels"]  # Alertmanager's identity of the alert


def test_timestamps_ahead_of_the_clock_are_clamped() -> None:
    # A sensor clock 10 s ahead must not produce startsAt > endsAt (the API answers 400).
    ahead = event("resolved", ts=T0 + 10)
    body = alert_payload(ahead, starts_at=T0 + 5, now=T0, ttl_s=60, worker_url="u")
    assert body["startsAt"] == body["endsAt"] == iso_utc(T0)


def test_retries_after_500(registry: CollectorRegistry) -> None:
    server = FakeAlertmanager(statuses=[500, 503])
    try:
        sink = AlertmanagerSink(
            server.url, "http://w/", registry=registry, backoff_initial_s=0.01, clock=lambda: T0
        )
        sink.send(event())
        assert sink.close()
        assert len(server.requests) == 3
        assert server.requests[0][2] == server.requests[2][2]
        assert sample(registry, "iotad_alertmanager_errors_total", url=server.url) == 2
        assert sample(registry, "iotad_alertmanager_sent_total") == 1
    finally:
        server.stop()


def test_retries_while_alertmanager_is_down(registry: CollectorRegistry) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sink = AlertmanagerSink(
        url,
        "http://w/",
        registry=registry,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        timeout_s=1,
    )
    sink.send(event())
    wait_for(lambda: sample(registry, "iotad_alertmanager_errors_total", url=url) >= 2)
    server = FakeAlertmanager(port=port)  # Alertmanager comes up
    try:
        wait_for(lambda: len(server.requests) == 1)
        assert server.alerts[0]["labels"]["device"] == "press-7"
        assert sink.close()
        assert sample(registry, "iotad_alertmanager_sent_total") == 1
    finally:
        server.stop()


def test_rejected_alerts_are_not_retried(registry: CollectorRegistry) -> None:
    server = FakeAlertmanager(statuses=[400])
    try:
        sink = AlertmanagerSink(server.url, "http://w/", registry=registry)
        sink.send(event())
        assert sink.close()
        assert len(server.requests) == 1
        assert sample(registry, "iotad_alertmanager_dropped_total", reason="rejected") == 1
    finally:
        server.stop()


def test_full_queue_drops_oldest_and_counts(registry: CollectorRegistry) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sink = AlertmanagerSink(url, "http://w/", registry=registry, queue_size=2, backoff_initial_s=30)
    sink.send(event(device="d0"))
    # d0 is now in the delivery thread's batch, waiting to retry; the queue holds two.
    wait_for(lambda: sample(registry, "iotad_alertmanager_errors_total", url=url) >= 1)
    for i in (1, 2, 3):
        sink.send(event(device=f"d{i}"))
    # The sends went by while the only delivery attempt sits in its 30 s backoff: none of
    # them touched the network (no second attempt, no second error).
    assert sample(registry, "iotad_alertmanager_errors_total", url=url) == 1
    assert sample(registry, "iotad_alertmanager_dropped_total", reason="queue_full") == 1
    assert [p.event.device for p in sink._queue] == ["d2", "d3"]
    assert not sink.close(timeout_s=0.2)  # nothing can be delivered: counted as shutdown
    assert sample(registry, "iotad_alertmanager_dropped_total", reason="shutdown") == 3


def test_send_does_not_block_on_a_slow_alertmanager(
    am: FakeAlertmanager, registry: CollectorRegistry
) -> None:
    am.hold.clear()  # the server sits on every request until released
    sink = AlertmanagerSink(am.url, "http://w/", registry=registry, timeout_s=60)
    sink.send(event(device="d0"))
    assert am.arrived.wait(10)  # the first post is now held by the server
    for i in range(1, 100):
        sink.send(event(device=f"d{i}"))
    # All sends returned while the server still holds the first post unanswered: send never
    # waits on the network (a blocking send would still be stuck in that post).
    assert am.requests == []
    assert sink.queue_depth == 99
    am.hold.set()
    assert sink.close()
    assert len({a["labels"]["device"] for a in am.alerts}) == 100


def test_active_alerts_are_reposted_until_resolved(
    am: FakeAlertmanager, registry: CollectorRegistry
) -> None:
    clock = [T0]
    sink = AlertmanagerSink(
        am.url, "http://w/", registry=registry, resend_interval_s=0.05, clock=lambda: clock[0]
    )
    sink.send(event("firing", ts=T0))
    sink.send(event("firing", ts=T0, device="other"))
    wait_for(lambda: len(am.alerts) >= 2)
    clock[0] = T0 + 100
    wait_for(lambda: len(am.alerts) >= 6)
    press = [a for a in am.alerts if a["labels"]["device"] == "press-7"]
    # A re-post keeps the episode start and pushes endsAt on (ttl 4 × 0.05 s).
    assert press[0]["endsAt"] == "2023-11-14T22:13:20.200Z"
    assert press[-1]["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert press[-1]["endsAt"] == "2023-11-14T22:15:00.200Z"

    sink.send(event("resolved", ts=T0 + 100))
    wait_for(lambda: any(a["annotations"]["alert_id"] == "ep-1-resolved" for a in am.alerts))
    n = len(am.alerts)
    wait_for(lambda: len(am.alerts) >= n + 2)
    later = am.alerts[n:]
    assert {a["labels"]["device"] for a in later} == {"other"}  # press-7 no longer re-posted
    assert sink.close()


def test_from_settings(am: FakeAlertmanager, registry: CollectorRegistry) -> None:
    assert AlertmanagerSink.from_settings(AlertmanagerSettings()) is None
    settings = AlertmanagerSettings(url=am.url, severity="page", resend_interval_s=5)
    sink = AlertmanagerSink.from_settings(settings, metrics_port=9200, registry=registry)
    assert sink is not None
    assert sink.worker_url == f"http://{socket.gethostname()}:9200/"
    assert sink.ttl_s == 20
    sink.send(event())
    assert sink.close()
    assert am.alerts[0]["labels"]["severity"] == "page"


def test_from_settings_sends_the_token_and_the_static_labels(
    am: FakeAlertmanager, registry: CollectorRegistry, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    settings = AlertmanagerSettings(url=am.url, token_file=token, labels="plant=north")
    sink = AlertmanagerSink.from_settings(settings, registry=registry)
    assert sink is not None
    sink.send(event())
    assert sink.close()
    (_, headers, body), *_ = am.requests
    assert headers["Authorization"] == "Bearer tok-123"
    assert body[0]["labels"]["plant"] == "north"


def test_a_redirect_is_not_followed(registry: CollectorRegistry) -> None:
    # Following it would hand the credentials to wherever it points (urllib follows a 302
    # of a POST as a GET, without the alerts).
    elsewhere = FakeAlertmanager()
    server = FakeAlertmanager(statuses=[302])
    server.location = elsewhere.url + "/api/v2/alerts"
    try:
        sink = AlertmanagerSink(
            server.url, "http://w/", registry=registry, headers={"Authorization": "Bearer x"}
        )
        sink.send(event())
        assert sink.close()
        assert len(server.requests) == 1
        assert elsewhere.requests == [] and elsewhere.gets == []
        assert sample(registry, "iotad_alertmanager_dropped_total", reason="rejected") == 1
    finally:
        server.stop()
        elsewhere.stop()
