"""Silence: a series that stops reporting while its siblings go on fires, and resolves."""

from __future__ import annotations

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from tests.detector.core_fixtures import LastValueForecaster, make_artifact


def _core(silence_after: float = 5.0) -> DetectionCore:
    return DetectionCore(
        make_artifact(window_len=3),
        LastValueForecaster(),
        DetectionConfig(silence_after=silence_after),
    )


def test_a_series_that_stops_fires_after_its_limit_and_resolves_when_back() -> None:
    core = _core()
    events = []
    for k in range(30):
        t = 60.0 * k
        batch = [Reading("m1", "temp", t, 20.0 + k % 3)]
        if k <= 10 or k >= 25:  # m1/rpm is quiet from t = 660 to t = 1440
            batch.append(Reading("m1", "rpm", t, 100.0 + k % 2))
        events += [(e.state, e.metric, e.ts, e.signal) for e in core.process(batch, now=t).events]
    # Last rpm reading at 600; typical interval 60; limit 5 * 60 = 300: the clock passes
    # 900 at t = 960 (at 900 it is exactly the limit, not past it); the alert is stamped
    # with the moment the limit passed.
    assert events == [
        ("firing", "rpm", 900.0, "silence"),
        ("resolved", "rpm", 1500.0, "silence"),
    ]


def test_silence_can_be_turned_off() -> None:
    core = _core(silence_after=0.0)
    events = []
    for k in range(30):
        batch = [Reading("m1", "temp", 60.0 * k, 20.0 + k % 3)]
        if k <= 10:
            batch.append(Reading("m1", "rpm", 60.0 * k, 100.0))
        events += core.process(batch, now=60.0 * k).events
    assert [e for e in events if e.signal == "silence"] == []


def test_a_whole_quiet_stream_is_not_silence() -> None:
    # The clock is the newest reading: with nothing arriving, nothing can be judged silent.
    core = _core()
    core.process([Reading("m1", "temp", 0.0, 1.0)], now=0.0)
    core.process([Reading("m1", "temp", 60.0, 1.0)], now=60.0)
    assert core.process([Reading("m1", "temp", 10_000.0, 1.0)], now=10_000.0).events == []


def test_a_reading_from_the_future_does_not_make_the_others_silent() -> None:
    core = _core(silence_after=3.0)  # 3 minutes of quiet at one reading a minute
    events = []
    for k in range(20):
        t = 60.0 * k
        batch = [Reading("m1", "temp", t, 1.0 + k % 2), Reading("m1", "rpm", t, 5.0 + k % 3)]
        events += core.process(batch, now=t).events
    # One message stamped 290 s ahead of the clock (within a worker's max_future_s), alone.
    events += core.process([Reading("m2", "temp", 1430.0, 3.0)], now=1140.0).events
    events += core.process([Reading("m1", "temp", 1200.0, 1.0)], now=1200.0).events
    assert [e for e in events if e.signal == "silence"] == []


def _stream() -> list[Reading]:
    readings = []
    for k in range(40):
        t = 60.0 * k
        readings.append(Reading("m1", "temp", t, 20.0 + k % 3))
        if not 10 < k < 25 and not 30 < k < 33:  # a long silence, then one too short
            readings.append(Reading("m1", "rpm", t, 100.0 + k % 2))
    return readings


def _silences(batches: list[list[Reading]]) -> list[tuple[str, str, float]]:
    core = _core()
    out = []
    for batch in batches:
        events = core.process(batch, now=max(r.ts for r in batch)).events
        out += [(e.state, e.metric, e.ts) for e in events if e.signal == "silence"]
    return out


def test_silence_events_do_not_depend_on_how_readings_are_batched() -> None:
    readings = _stream()
    one_by_one = _silences([[r] for r in readings])
    by_ts = _silences([readings[i : i + 2] for i in range(0, len(readings), 2)])
    all_at_once = _silences([readings])
    assert one_by_one == [("firing", "rpm", 900.0), ("resolved", "rpm", 1500.0)]
    assert by_ts == one_by_one and all_at_once == one_by_one


def test_silence_events_carry_plain_floats() -> None:
    # They go to JSON encoders that refuse numpy scalars (found by the worker identity test).
    events = []
    core = _core()
    for batch in [[r] for r in _stream()]:
        events += core.process(batch, now=batch[0].ts).events
    silences = [e for e in events if e.signal == "silence"]
    assert silences and all(type(e.ts) is float and type(e.value) is float for e in silences)
