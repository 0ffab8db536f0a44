"""`DetectionCore.end_devices`: series whose source said they are gone (a Sparkplug DEATH)
leave the core as idle series do: no silence for them, a new segment when they return, and
their open alerts resolved."""

from __future__ import annotations

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.events import AlertEvent
from tests.detector.core_fixtures import LastValueForecaster, make_artifact, run_with_bystander

STEP = 60.0


def _core() -> DetectionCore:
    return DetectionCore(
        make_artifact(window_len=3), LastValueForecaster(), DetectionConfig(learn_readings=20)
    )


def _run(core: DetectionCore, start: int, stop: int, level: dict[str, float]) -> list[AlertEvent]:
    return run_with_bystander(core, start, stop, level, STEP)


def test_an_ended_device_fires_no_silence() -> None:
    for end in (False, True):
        core = _core()
        _run(core, 0, 50, {"gw1/temp": 20.0, "gw1_a/rpm": 5.0})
        if end:
            assert core.end_devices({"gw1": 50 * STEP, "gw1_a": 50 * STEP}) == []
            assert core.active_series == 1  # the bystander only
        events = _run(core, 50, 80, {})  # the node is gone; the bystander goes on
        silence = sorted((e.device, e.state) for e in events if e.signal == "silence")
        if end:
            assert silence == []
        else:  # the control: without the end, both go silent
            assert silence == [("gw1", "firing"), ("gw1_a", "firing")]


def test_the_first_readings_after_a_rebirth_start_a_new_segment() -> None:
    for end in (False, True):
        core = _core()
        _run(core, 0, 60, {"gw1/temp": 20.0})
        if end:
            core.end_devices({"gw1": 60 * STEP})
        # back after an hour, at another level (a machine restarted at another setpoint)
        events = _run(core, 120, 130, {"gw1/temp": 80.0})
        fired = [e for e in events if e.device == "gw1" and e.state == "firing"]
        if end:
            assert fired == []
            assert core.warming_series == 0  # warmed up again: its window is the new level
        else:  # the control: judged against the readings before the gap, it is a jump
            assert len(fired) == 1


def test_an_open_episode_of_an_ended_series_is_resolved() -> None:
    core = _core()
    _run(core, 0, 60, {"gw1/temp": 20.0})
    fired = [e for e in _run(core, 60, 61, {"gw1/temp": 500.0}) if e.device == "gw1"]
    assert [e.state for e in fired] == ["firing"]
    events = core.end_devices({"gw1": 61.5 * STEP, "other": 0.0})
    assert [(e.state, e.device, e.metric, e.ts) for e in events] == [
        ("resolved", "gw1", "temp", 61.5 * STEP)
    ]
    assert events[0].id == f"{fired[0].id}-resolved"
    assert events[0].signal == fired[0].signal
    assert events[0].reason == "ended"
    assert core.end_devices({"gw1": 62 * STEP}) == []  # nothing left to end


def test_a_silent_series_that_ends_resolves_its_silence() -> None:
    core = _core()
    _run(core, 0, 50, {"gw1/temp": 20.0})
    events = _run(core, 50, 70, {})
    fired = [e for e in events if e.device == "gw1" and e.signal == "silence"]
    assert [e.state for e in fired] == ["firing"]
    resolved = core.end_devices({"gw1": 70 * STEP})
    assert [(e.state, e.signal, e.ts, e.reason) for e in resolved] == [
        ("resolved", "silence", 70 * STEP, "ended")
    ]
    assert resolved[0].id == f"{fired[0].id}-resolved"
