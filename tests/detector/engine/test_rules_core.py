"""The rules in the detection core: threshold, mute, maintenance, labels, reloads, silence.

The stream: a series swinging 0, 0.5, -0.5 (a naive forecaster, window 3), with a spike or a
level shift to 50 at reading 12. Without rules the spike fires at reading 12 (score 0.94)
and resolves at reading 24 (`test_core.test_spike_fires_once_and_resolves`).
"""

from __future__ import annotations

from datetime import time

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from detector.engine.rule_windows import ALL_DAYS, OneOffWindow, RecurringWindow
from detector.engine.rules import Rule, RuleSet
from tests.detector.core_fixtures import LastValueForecaster, make_artifact

T0 = 1000.0
STEP = 60.0
BASE = [0.0, 0.5, -0.5] * 4
SPIKE = [*BASE, 50.0, *BASE * 4]
LEVEL = [*BASE, *[50.0] * 10, *BASE * 4]  # anomalous from reading 12 to 21 at least


def at(i: int) -> float:
    return T0 + STEP * i


def readings(values: list[float], device: str = "m1", metric: str = "temp") -> list[Reading]:
    return [Reading(device, metric, at(i), v) for i, v in enumerate(values)]


def core(rules: list[Rule] | None = None, **cfg: float) -> DetectionCore:
    art = make_artifact(
        window_len=3,
        per_series={"m1/temp": (0.0, 1.0), "m2/temp": (0.0, 1.0)},
        errors={"m1/temp": (0.0, 1.0), "m2/temp": (0.0, 1.0)},
    )
    config = DetectionConfig(resolve_after=3, quiet_period=0, **cfg)  # type: ignore[arg-type]
    return DetectionCore(art, LastValueForecaster(), config, RuleSet(rules or []))


def window(first: int, last: int) -> OneOffWindow:
    """Readings `first` to `last` (inclusive) fall inside."""
    return OneOffWindow(at(first), at(last) + 1.0, f"{first}-{last}")


def states(result) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [(e.state, round((e.ts - T0) / STEP)) for e in result.events]


def test_no_rules_fire_as_before() -> None:
    res = core().process(readings(SPIKE))
    assert states(res) == [("firing", 12), ("resolved", 24)]
    assert res.suppressed == []


def test_mute_scores_and_counts_but_raises_no_alert() -> None:
    c = core([Rule(device="m1", mute=True)])
    res = c.process(readings(SPIKE) + readings(SPIKE, device="m2"))
    assert [(e.device, e.state) for e in res.events] == [("m2", "firing"), ("m2", "resolved")]
    muted = [s for s in res.scored if s.reading.device == "m1"]
    assert len(muted) == len(SPIKE) - 3  # every ready reading scored
    assert muted[12 - 3].is_anomaly and not muted[12 - 3].onset
    assert [(s.reason, s.event.device, s.event.ts) for s in res.suppressed] == [
        ("mute", "m1", at(12))
    ]


def test_threshold_override_both_ways() -> None:
    # A step to 8 scores at most 0.18 (about 0.03 for the swing itself).
    small = [*BASE, 8.0, *BASE * 4]
    assert core().process(readings(small)).events == []  # default threshold 0.5
    res = core([Rule(metric="temp", threshold=0.15)]).process(readings(small))
    # The mean of recent errors peaks at the reading after the step.
    assert states(res)[0] == ("firing", 13)
    assert res.events[0].threshold == 0.15
    # And the other way: a worker threshold of 0.15, raised to 0.5 for m1 only.
    both = readings(small) + readings(small, device="m2")
    res = core([Rule(device="m1", threshold=0.5)], threshold=0.15).process(both)
    assert {(e.device, e.state) for e in res.events} == {("m2", "firing"), ("m2", "resolved")}


def test_maintenance_window_keeps_the_fault_back_and_it_fires_after_the_window() -> None:
    # The level shift starts at reading 12 inside the window (12-15) and goes on after it.
    c = core([Rule(device="m*", maintenance=(window(12, 15),))])
    res = c.process(readings(LEVEL))
    assert states(res)[0] == ("firing", 16)  # the first anomalous reading after the window
    assert res.events[0].id != core().process(readings(LEVEL)).events[0].id  # a new onset
    assert [(s.reason, s.event.ts) for s in res.suppressed] == [("maintenance", at(12))]


def test_a_fault_inside_a_window_and_over_with_it_never_alerts() -> None:
    res = core([Rule(maintenance=(window(10, 30),))]).process(readings(SPIKE))
    assert res.events == []
    assert [s.reason for s in res.suppressed] == ["maintenance"]  # once, not per reading


def test_an_open_episode_ends_in_a_window_and_its_end_is_sent() -> None:
    c = core([Rule(maintenance=(window(14, 60),))])
    res = c.process(readings(LEVEL))
    # Fired at 12; readings in the window count as normal: resolved after 3 of them.
    assert states(res) == [("firing", 12), ("resolved", 16)]


def test_the_window_is_judged_on_the_readings_time_not_the_batching() -> None:
    rules = [Rule(maintenance=(window(12, 15),))]
    batched = core(rules).process(readings(LEVEL))
    one = core(rules)
    events, suppressed = [], []
    for r in readings(LEVEL):
        res = one.process([r], now=r.ts)
        events += res.events
        suppressed += res.suppressed
    assert [(e.state, e.ts, e.id) for e in events] == [
        (e.state, e.ts, e.id) for e in batched.events
    ]
    assert len(suppressed) == len(batched.suppressed) == 1


def test_recurring_window_on_reading_time() -> None:
    # T0 + 12 steps is 00:28:40 UTC (on 1 January 1970): a daily 00:28-00:32 window holds
    # readings 12 to 15, as `window(12, 15)` does.
    daily = RecurringWindow(ALL_DAYS, time(0, 28), time(0, 32), "UTC")
    res = core([Rule(maintenance=(daily,))]).process(readings(LEVEL))
    assert states(res)[0] == ("firing", 16)
    assert [(s.reason, s.event.ts) for s in res.suppressed] == [("maintenance", at(12))]


def test_severity_and_labels_ride_on_the_events() -> None:
    rules = [
        Rule(labels={"site": "north"}),
        Rule(device="m1", severity="critical", labels={"team": "a"}),
    ]
    res = core(rules).process(readings(SPIKE) + readings(SPIKE, device="m2"))
    by = {(e.device, e.state): e for e in res.events}
    assert by["m1", "firing"].severity == "critical"
    assert dict(by["m1", "firing"].labels) == {"site": "north", "team": "a"}
    assert by["m2", "firing"].severity is None
    assert dict(by["m2", "firing"].labels) == {"site": "north"}
    assert by["m1", "firing"].to_dict()["labels"] == {"site": "north", "team": "a"}


def test_new_rules_apply_from_the_next_reading() -> None:
    c = core()
    first = c.process(readings(SPIKE[:10]))
    assert first.events == []
    c.set_rules(RuleSet([Rule(device="m1", mute=True)]))
    rest = [Reading("m1", "temp", at(i), v) for i, v in enumerate(SPIKE) if i >= 10]
    res = c.process(rest)
    assert res.events == [] and [s.reason for s in res.suppressed] == ["mute"]
    # And back: un-muted, the next fault alerts again.
    c.set_rules(RuleSet())
    second = [*BASE, 100.0, *BASE]  # 50 again would be no news after the first
    later = [Reading("m1", "temp", at(len(SPIKE) + i), v) for i, v in enumerate(second)]
    assert [e.state for e in c.process(later).events][:1] == ["firing"]


def test_series_allocated_after_a_reload_get_the_new_rules() -> None:
    c = core()
    c.set_rules(RuleSet([Rule(device="m2", threshold=0.15)]))
    small = [*BASE, 8.0, *BASE * 4]
    assert states(c.process(readings(small, device="m2")))[0] == ("firing", 13)


def test_silence_in_a_maintenance_window_is_kept_back_with_its_end() -> None:
    def stream(c: DetectionCore) -> tuple[list, list]:
        events, suppressed = [], []
        for k in range(30):
            t = 60.0 * k
            batch = [Reading("m1", "temp", t, 20.0 + k % 3)]
            if k <= 10 or k >= 25:  # m1/rpm is quiet from t = 660 to t = 1440
                batch.append(Reading("m1", "rpm", t, 100.0 + k % 2))
            res = c.process(batch, now=t)
            events += [(e.state, e.metric, e.ts, e.signal) for e in res.events]
            suppressed += [(s.reason, s.event.ts) for s in res.suppressed]
        return events, suppressed

    art = make_artifact(window_len=3)
    cfg = DetectionConfig(silence_after=5.0)
    plain = DetectionCore(art, LastValueForecaster(), cfg)
    # Without rules: fires at 900 (the limit), resolves at 1500 (test_silence).
    assert stream(plain)[0] == [
        ("firing", "rpm", 900.0, "silence"),
        ("resolved", "rpm", 1500.0, "silence"),
    ]
    stop = Rule(metric="rpm", maintenance=(OneOffWindow(600.0, 1200.0, "stop"),))
    ruled = DetectionCore(art, LastValueForecaster(), cfg, RuleSet([stop]))
    assert stream(ruled) == ([], [("maintenance", 900.0)])


def test_checkpoint_restores_the_kept_back_episodes() -> None:
    rules = [Rule(maintenance=(window(12, 15),))]
    straight = core(rules).process(readings(LEVEL))
    first = core(rules)
    part = first.process(readings(LEVEL)[:14])
    second = core(rules)
    second.restore(first.snapshot())
    rest = second.process(readings(LEVEL)[14:])
    assert [(s.reason, s.event.ts) for s in part.suppressed + rest.suppressed] == [
        (s.reason, s.event.ts) for s in straight.suppressed
    ]
    assert [(e.state, e.ts) for e in rest.events] == [(e.state, e.ts) for e in straight.events]
