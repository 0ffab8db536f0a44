"""The open-episode gauges (`detector.worker.metrics.ActiveAnomalies`) and how the worker feeds
them."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from detector.engine.events import AlertEvent, BatchResult, Eviction, Scored
from detector.worker.metrics import ActiveAnomalies, WorkerMetrics
from tests.detector.worker.test_worker import T0, FakeBroker, ScriptedCore, feed, make_worker


def event(
    state: str, device: str = "press-1", metric: str = "temp", ts: float = 100.0, **kw: object
) -> AlertEvent:
    fields = {"value": 9.0, "expected": 5.0, "lower": 4.0, "upper": 6.0, "score": 0.9}
    fields.update(kw)  # type: ignore[arg-type]
    return AlertEvent(
        id=f"{device}/{metric}@{ts}",
        state=state,  # type: ignore[arg-type]
        device=device,
        metric=metric,
        ts=ts,
        threshold=0.5,
        **fields,  # type: ignore[arg-type]
    )


def tracker(registry: CollectorRegistry, cap: int = 10) -> ActiveAnomalies:
    active = ActiveAnomalies(cap)
    registry.register(active)
    return active


def labels(device: str = "press-1", metric: str = "temp", signal: str = "forecast") -> dict:
    return {"device": device, "metric": metric, "signal": signal}


def test_an_episode_is_exported_while_it_fires(registry: CollectorRegistry) -> None:
    active = tracker(registry)
    get = registry.get_sample_value
    assert get("iotad_anomaly_active", labels()) is None
    assert get("iotad_anomaly_episodes_open") == 0
    assert get("iotad_anomaly_active_overflow_total") == 0

    active.fire(event("firing", ts=100.0, value=9.0, lower=4.0, upper=6.0))
    assert get("iotad_anomaly_active", labels()) == 1
    assert get("iotad_anomaly_active_since_seconds", labels()) == 100.0
    assert get("iotad_anomaly_active_value", labels()) == 9.0
    assert get("iotad_anomaly_active_lower", labels()) == 4.0
    assert get("iotad_anomaly_active_upper", labels()) == 6.0
    assert get("iotad_anomaly_episodes_open") == 1

    # later readings of the series move value and band; the onset stays
    active.update("press-1", "temp", 12.0, 5.5, 4.5, 6.5, 0.99)
    active.update("press-2", "temp", 1.0, 1.0, 0.0, 2.0, 0.1)  # no open episode: ignored
    assert get("iotad_anomaly_active_value", labels()) == 12.0
    assert get("iotad_anomaly_active_expected", labels()) == 5.5
    assert get("iotad_anomaly_active_upper", labels()) == 6.5
    assert get("iotad_anomaly_active_score", labels()) == 0.99
    assert get("iotad_anomaly_active_since_seconds", labels()) == 100.0
    assert get("iotad_anomaly_active_value", labels("press-2")) is None

    active.resolve(event("resolved", ts=130.0))
    text = generate_latest(registry).decode()
    assert 'device="press-1"' not in text  # the series is gone, not left at 0
    assert get("iotad_anomaly_episodes_open") == 0


def test_a_silence_is_an_episode_beside_the_forecast_one(registry: CollectorRegistry) -> None:
    active = tracker(registry)
    get = registry.get_sample_value
    active.fire(event("firing", ts=100.0))
    active.fire(event("firing", ts=160.0, signal="silence", value=7.0))
    assert get("iotad_anomaly_active", labels()) == 1
    assert get("iotad_anomaly_active", labels(signal="silence")) == 1
    assert get("iotad_anomaly_episodes_open") == 2
    # the silence resolves with the next reading; the forecast episode goes on
    active.resolve(event("resolved", ts=170.0, signal="silence"))
    active.update("press-1", "temp", 8.0, 5.0, 4.0, 6.0, 0.8)
    assert get("iotad_anomaly_active", labels(signal="silence")) is None
    assert get("iotad_anomaly_active_value", labels()) == 8.0


def test_the_cap_shows_the_earliest_and_counts_the_overflow(registry: CollectorRegistry) -> None:
    active = tracker(registry, cap=2)
    get = registry.get_sample_value
    for i, device in enumerate(("a", "b", "c", "d")):
        active.fire(event("firing", device=device, ts=100.0 + i))
    shown = [d for d in "abcd" if get("iotad_anomaly_active", labels(d)) == 1]
    assert shown == ["a", "b"]
    assert get("iotad_anomaly_episodes_open") == 4
    assert get("iotad_anomaly_active_overflow_total") == 2
    # a re-sent firing of an open episode is no new episode
    active.fire(event("firing", device="a", ts=100.0))
    assert get("iotad_anomaly_active_overflow_total") == 2
    # one resolves: the next-earliest takes its place
    active.resolve(event("resolved", device="a", ts=200.0))
    shown = [d for d in "abcd" if get("iotad_anomaly_active", labels(d)) == 1]
    assert shown == ["b", "c"]
    assert get("iotad_anomaly_active_since_seconds", labels("c")) == 102.0


def test_a_cap_of_zero_exports_only_the_counts(registry: CollectorRegistry) -> None:
    active = tracker(registry, cap=0)
    active.fire(event("firing"))
    assert registry.get_sample_value("iotad_anomaly_active", labels()) is None
    assert registry.get_sample_value("iotad_anomaly_episodes_open") == 1
    assert registry.get_sample_value("iotad_anomaly_active_overflow_total") == 1


def test_unknown_resolutions_are_ignored(registry: CollectorRegistry) -> None:
    active = tracker(registry)
    active.resolve(event("resolved", device="never-fired"))  # e.g. opened before a restart
    active.fire(event("firing", device="b"))
    assert registry.get_sample_value("iotad_anomaly_active", labels("b")) == 1
    assert len(active) == 1


class EpisodeCore(ScriptedCore):
    """Fires at a value above 10, resolves at a value of 0, band [0, 2] around 1; series
    named in `evicted` are gone at the next sweep, their open episodes resolved."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.evicted: set[str] = set()

    def process(self, readings, now=None) -> BatchResult:  # type: ignore[no-untyped-def]
        result = BatchResult(scored=[], events=[], dropped=[])
        for r in readings:
            bad = r.value > 10
            result.scored.append(Scored(r, 1.0, 0.0, 2.0, 0.9 if bad else 0.1, bad))
            state = None
            if bad and r.key not in self.open:
                self.open.add(r.key)
                state = "firing"
            elif r.value == 0 and r.key in self.open:
                self.open.discard(r.key)
                state = "resolved"
            if state:
                band = {"expected": 1.0, "lower": 0.0, "upper": 2.0, "score": 0.9}
                result.events.append(
                    AlertEvent(
                        f"{r.key}@{r.ts}",
                        state,
                        r.device,
                        r.metric,
                        r.ts,
                        r.value,
                        **band,
                        threshold=0.5,
                    )
                )
        return result

    def evict_idle(self, now: float) -> Eviction:
        gone = sorted(self.evicted & self.open)
        self.open -= self.evicted
        events = [
            AlertEvent(
                f"{key}-resolved",
                "resolved",
                *key.split("/"),
                now,
                0.0,
                1.0,
                0.0,
                2.0,
                0.0,
                0.5,
                reason="evicted",
            )
            for key in gone
        ]
        return Eviction(len(self.evicted), events)


def reading(i: int, value: float, device: str = "d1") -> tuple[str, bytes]:
    return f"sensors/{device}/temp", json.dumps({"ts": T0 + i, "value": value}).encode()


def test_the_worker_follows_episodes_from_its_alert_events(registry: CollectorRegistry) -> None:
    broker = FakeBroker()
    core = EpisodeCore()
    w = make_worker(broker, registry)
    w.core = core
    get = registry.get_sample_value
    d1 = labels("d1", "temp")
    feed(w, [reading(1, 1.0), reading(2, 50.0)])
    assert get("iotad_anomaly_active", d1) == 1
    assert get("iotad_anomaly_active_since_seconds", d1) == T0 + 2
    assert get("iotad_anomaly_active_value", d1) == 50.0
    feed(w, [reading(3, 60.0), reading(1, 55.0, "d2")], first_mid=3)
    assert get("iotad_anomaly_active_value", d1) == 60.0
    assert get("iotad_anomaly_active_upper", d1) == 2.0
    assert get("iotad_anomaly_active", labels("d2", "temp")) == 1
    assert [a["state"] for a in broker.on("alerts/")] == ["firing", "firing"]
    # the alert resolves: the series leaves the gauge in the same batch
    feed(w, [reading(4, 0.0)], first_mid=5)
    assert get("iotad_anomaly_active", d1) is None
    assert get("iotad_anomaly_episodes_open") == 1
    # d2 is evicted: its resolved event takes it out like any other
    core.evicted.add("d2/temp")
    w.evict_every_s = 0.0
    w._next_evict = w._next_housekeeping = 0.0
    w._housekeeping()
    assert get("iotad_anomaly_active", labels("d2", "temp")) is None
    assert get("iotad_anomaly_episodes_open") == 0
    assert [(a["device"], a["state"], a["reason"]) for a in broker.on("alerts/")][-1] == (
        "d2",
        "resolved",
        "evicted",
    )


def test_per_series_gauges_carry_the_band(registry: CollectorRegistry) -> None:
    m = WorkerMetrics(registry, series_devices=["press-1"], max_active_anomalies=3)
    m.set_series("press-1", "temp", 21.5, 21.0, 0.7, lower=20.0, upper=22.0)
    series = {"device": "press-1", "metric": "temp"}
    assert registry.get_sample_value("iotad_series_lower", series) == 20.0
    assert registry.get_sample_value("iotad_series_upper", series) == 22.0
    assert m.active_anomalies.max_exported == 3
    assert WorkerMetrics(CollectorRegistry()).active_anomalies.max_exported == 500  # README
