"""The Alertmanager payload says which signal fired, and words a silence as one."""

from __future__ import annotations

from dataclasses import replace

from detector.engine.events import AlertEvent
from detector.worker.alertmanager import alert_payload


def _event(state: str, signal: str) -> AlertEvent:
    return AlertEvent(
        id="x", state=state, device="press-7", metric="rpm", ts=100.0, value=42.0,  # type: ignore[arg-type]
        expected=42.0, lower=42.0, upper=42.0, score=1.0, threshold=0.5, signal=signal,
    )  # fmt: skip


def _summary(state: str, signal: str) -> tuple[str, str]:
    body = alert_payload(
        _event(state, signal), starts_at=100.0, now=200.0, ttl_s=60.0, worker_url="http://w/"
    )
    return body["annotations"]["summary"], body["annotations"]["signal"]


def test_a_silence_is_said_as_one() -> None:
    assert _summary("firing", "silence") == (
        "press-7/rpm stopped reporting (last value 42)",
        "silence",
    )
    assert _summary("resolved", "silence") == ("press-7/rpm reports again", "silence")


def test_a_score_alert_names_its_signal() -> None:
    summary, signal = _summary("firing", "relation")
    assert summary.endswith("(score 1 > threshold 0.5, relation)") and signal == "relation"


def test_series_labels_join_the_alertmanager_labels_but_never_replace_ours() -> None:
    event = AlertEvent(
        id="x", state="firing", device="press-7", metric="rpm", ts=100.0, value=42.0,
        expected=42.0, lower=42.0, upper=42.0, score=1.0, threshold=0.5,
        labels={"site": "north", "line": "L2"},
    )  # fmt: skip
    body = alert_payload(
        event,
        starts_at=100.0,
        now=200.0,
        ttl_s=60.0,
        worker_url="http://w/",
        labels={"plant": "p1", "site": "static"},
    )
    assert body["labels"] == {
        "plant": "p1",
        "site": "north",  # the series' own label wins over a static one
        "line": "L2",
        "alertname": "SensorAnomaly",
        "device": "press-7",
        "metric": "rpm",
        "severity": "warning",
    }


def test_the_rules_severity_and_labels_win_over_the_sinks() -> None:
    from dataclasses import replace

    ruled = replace(_event("firing", "forecast"), severity="critical", labels={"team": "a"})
    body = alert_payload(
        ruled,
        starts_at=100.0,
        now=200.0,
        ttl_s=60.0,
        worker_url="http://w/",
        severity="warning",
        labels={"team": "plant", "site": "north"},
    )
    assert body["labels"] == {
        "team": "a",
        "site": "north",
        "alertname": "SensorAnomaly",
        "device": "press-7",
        "metric": "rpm",
        "severity": "critical",
    }
    plain = alert_payload(
        _event("firing", "forecast"), starts_at=100.0, now=200.0, ttl_s=60.0,
        worker_url="http://w/", severity="warning",
    )  # fmt: skip
    assert plain["labels"]["severity"] == "warning"


def test_a_resolved_alert_says_why_when_no_reading_resolved_it() -> None:
    def annotations(signal: str, reason: str | None) -> dict[str, str]:
        event = replace(_event("resolved", signal), reason=reason)
        body = alert_payload(event, starts_at=100.0, now=200.0, ttl_s=60.0, worker_url="w")
        assert body["endsAt"] == "1970-01-01T00:01:40.000Z"  # the event's time: it ends
        return body["annotations"]

    evicted = annotations("forecast", "evicted")
    assert evicted["resolved_reason"] == "evicted"
    assert evicted["summary"] == (
        "press-7/rpm sent nothing for the idle time and was evicted (resolved without a reading)"
    )
    assert annotations("silence", "evicted")["summary"] == evicted["summary"]
    assert annotations("forecast", "ended")["summary"] == (
        "press-7/rpm ended: its source said the device is gone (Sparkplug DEATH)"
    )
    plain = annotations("forecast", None)
    assert "resolved_reason" not in plain
    assert plain["summary"] == "press-7/rpm is back within its expected band"
