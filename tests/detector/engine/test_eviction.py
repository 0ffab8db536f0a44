"""`DetectionCore.evict_idle`: a series idle past `idle_evict_s` leaves the core, and an alert
still open on it (an episode, a silence) is resolved once, with reason ``evicted``; a
checkpoint restored with the alert open resolves it the same way."""

from __future__ import annotations

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.events import AlertEvent
from detector.engine.rules import Rule, RuleSet
from tests.detector.core_fixtures import LastValueForecaster, make_artifact, run_with_bystander

STEP = 60.0
IDLE_S = 3600.0


def _core(rules: RuleSet | None = None) -> DetectionCore:
    cfg = DetectionConfig(learn_readings=20, idle_evict_s=IDLE_S)
    return DetectionCore(make_artifact(window_len=3), LastValueForecaster(), cfg, rules)


def _run(core: DetectionCore, start: int, stop: int, level: dict[str, float]) -> list[AlertEvent]:
    return run_with_bystander(core, start, stop, level, STEP)


def _fire_episode(core: DetectionCore) -> AlertEvent:
    """gw1/temp learns a level, then jumps: its episode opens at step 60 and stays open."""
    _run(core, 0, 60, {"gw1/temp": 20.0})
    fired = [e for e in _run(core, 60, 61, {"gw1/temp": 500.0}) if e.device == "gw1"]
    assert [e.state for e in fired] == ["firing"]
    return fired[0]


def test_an_open_episode_resolves_once_when_its_series_is_evicted() -> None:
    rules = RuleSet([Rule(device="gw1", severity="critical", labels={"team": "press"})])
    core = _core(rules)
    fired = _fire_episode(core)
    last_seen = 60 * STEP  # of both series
    # Idle, but not for long enough: nothing is evicted, nothing resolves.
    assert core.evict_idle(now=last_seen + IDLE_S - 1.0).series == 0
    evicted = core.evict_idle(now=last_seen + IDLE_S + 30.0)
    assert evicted.series == 2  # gw1/temp and the bystander
    assert [(e.state, e.device, e.metric, e.ts, e.reason) for e in evicted.events] == [
        ("resolved", "gw1", "temp", last_seen + IDLE_S + 30.0, "evicted")
    ]
    (resolved,) = evicted.events
    assert resolved.id == f"{fired.id}-resolved"
    # What identifies the alert downstream (Alertmanager: its labels) is the firing's.
    assert (resolved.signal, resolved.severity, dict(resolved.labels)) == (
        fired.signal,
        "critical",
        {"team": "press"},
    )
    assert (fired.severity, dict(fired.labels)) == ("critical", {"team": "press"})
    assert resolved.threshold == fired.threshold
    assert core.active_series == 0
    # Evicted once: a later sweep has nothing left to resolve.
    assert core.evict_idle(now=last_seen + 10 * IDLE_S).events == []


def test_a_series_without_an_open_alert_is_evicted_silently() -> None:
    core = _core()
    _run(core, 0, 60, {"gw1/temp": 20.0})
    evicted = core.evict_idle(now=60 * STEP + IDLE_S)
    assert (evicted.series, evicted.events) == (2, [])


def _go_silent(core: DetectionCore) -> AlertEvent | None:
    """gw1/temp reports for 50 steps, then stops while the bystander goes on to step 70;
    returns the silence alert it fired (None: none)."""
    _run(core, 0, 50, {"gw1/temp": 20.0})
    events = _run(core, 50, 70, {})
    fired = [e for e in events if e.device == "gw1"]
    assert [e.state for e in fired] in ([], ["firing"])
    return fired[0] if fired else None


def test_an_open_silence_resolves_once_when_its_series_is_evicted() -> None:
    core = _core()
    fired = _go_silent(core)
    assert fired is not None and fired.signal == "silence"
    now = 49 * STEP + IDLE_S + 1.0  # past gw1's idle time, not the bystander's
    evicted = core.evict_idle(now=now)
    assert evicted.series == 1 and core.active_series == 1
    assert [(e.state, e.signal, e.device, e.ts, e.reason) for e in evicted.events] == [
        ("resolved", "silence", "gw1", now, "evicted")
    ]
    assert evicted.events[0].id == f"{fired.id}-resolved"
    assert core.evict_idle(now=now + 1.0).events == []


def test_a_silence_a_rule_kept_back_ends_unseen() -> None:
    core = _core(RuleSet([Rule(device="gw1", mute=True)]))
    assert _go_silent(core) is None  # muted: kept back
    evicted = core.evict_idle(now=49 * STEP + IDLE_S + 1.0)
    assert (evicted.series, evicted.events) == (1, [])


def test_an_episode_restored_from_a_checkpoint_resolves_at_eviction() -> None:
    before = _core()
    fired = _fire_episode(before)
    after = _core()
    assert after.restore(before.snapshot()) == 2
    evicted = after.evict_idle(now=60 * STEP + IDLE_S + 1.0)
    assert [(e.id, e.state, e.reason) for e in evicted.events] == [
        (f"{fired.id}-resolved", "resolved", "evicted")
    ]
