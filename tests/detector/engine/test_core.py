from __future__ import annotations

import math
import random

import numpy as np
import pytest

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.readings import Reading
from tests.detector.core_fixtures import LastValueForecaster, make_artifact, non_finite_state


def readings(device: str, values: list[float], t0: float = 1000.0, metric: str = "temp"):
    return [Reading(device, metric, t0 + i, v) for i, v in enumerate(values)]


def test_expected_band_and_score_by_hand() -> None:
    # Trained scale of m1/temp: offset 10, scale 2; residual stats: mean 0, std 0.5.
    art = make_artifact(
        window_len=3, per_series={"m1/temp": (10.0, 2.0)}, errors={"m1/temp": (0.0, 0.5)}
    )
    cfg = DetectionConfig(band_sigmas=3.0, use_level=False, use_range=False)
    core = DetectionCore(art, LastValueForecaster(), cfg)
    res = core.process(readings("m1", [10.0, 12.0, 14.0, 16.0]))
    assert res.warming == 3
    (s,) = res.scored
    # Naive forecast: last scaled value (14-10)/2 = 2 -> expected 2*2+10 = 14.
    assert s.expected == pytest.approx(14.0)
    # Band: 14 +/- 3 * 0.5 * 2 = [11, 17].
    assert (s.lower, s.upper) == (pytest.approx(11.0), pytest.approx(17.0))
    # |residual| = (16-10)/2 - 2 = 1 scaled. Calibration has no |r| moments, so a normal law
    # with std 0.5 gives E|r| = 0.5*sqrt(2/pi), sd|r| = 0.5*sqrt(1-2/pi); the score is the
    # upper tail probability of that z on the log scale of 1e-10.
    z = (1 - 0.5 * math.sqrt(2 / math.pi)) / (0.5 * math.sqrt(1 - 2 / math.pi))
    tail = 0.5 * math.erfc(z / math.sqrt(2))
    assert s.score == pytest.approx(math.log(tail + 1e-10) / math.log(1e-10))
    assert not s.is_anomaly


def test_value_outside_the_range_seen_scores_one() -> None:
    art = make_artifact(window_len=3)
    cfg = DetectionConfig(use_level=False, learn_readings=0)
    core = DetectionCore(art, LastValueForecaster(), cfg)
    res = core.process(readings("m1", [1.0, 3.0, 2.0, 2.5, 3.5]))
    assert [s.score == 1.0 for s in res.scored] == [False, True]


def test_a_series_the_model_does_not_know_learns_before_it_alerts() -> None:
    art = make_artifact(window_len=3)
    core = DetectionCore(art, LastValueForecaster(), DetectionConfig(learn_readings=5))
    values = [1.0, 2.0, 3.0] + [2.0] * 4 + [50.0] + [2.0, 2.0, 90.0]
    res = core.process(readings("new", values))
    scores = [s.score for s in res.scored]
    # 8 scored readings: the first 5 learn (score 0, even the jump to 50); the range is
    # trusted afterwards and 90 leaves it.
    assert scores[:5] == [0.0] * 5
    assert scores[-1] == 1.0


def test_spike_fires_once_and_resolves() -> None:
    art = make_artifact(
        window_len=3, per_series={"m1/temp": (0.0, 1.0)}, errors={"m1/temp": (0.0, 1.0)}
    )
    cfg = DetectionConfig(resolve_after=3, quiet_period=0)
    core = DetectionCore(art, LastValueForecaster(), cfg)
    values = [0.0, 0.5, -0.5] * 4 + [50.0] + [0.0, 0.5, -0.5] * 4
    res = core.process(readings("m1", values))
    assert [e.state for e in res.events] == ["firing", "resolved"]
    firing = res.events[0]
    assert (firing.device, firing.metric, firing.value) == ("m1", "temp", 50.0)
    assert firing.threshold == 0.5
    assert [s.onset for s in res.scored].count(True) == 1


def test_quiet_period_keeps_an_episode_open() -> None:
    art = make_artifact(window_len=3)
    cfg = DetectionConfig(resolve_after=2, quiet_period=30, learn_readings=0)
    core = DetectionCore(art, LastValueForecaster(), cfg)
    base = [0.0, 0.5, -0.5] * 4
    values = base + [50.0] + base + [-60.0] + base * 3
    res = core.process(readings("m1", values))
    # The second excursion falls within the quiet period of the first: one episode.
    assert [e.state for e in res.events] == ["firing", "resolved"]


def test_one_forecaster_call_per_batch() -> None:
    art = make_artifact(window_len=2)
    fc = LastValueForecaster()
    core = DetectionCore(art, fc)
    batch = [r for d in ("a", "b", "c") for r in readings(d, [1.0, 2.0, 3.0, 4.0, 5.0])]
    res = core.process(batch)
    assert fc.calls == 1
    assert fc.rows == len(res.scored) == 9  # 3 series x (5 - 2 warming)


def test_batched_scores_equal_one_at_a_time() -> None:
    rng = random.Random(7)
    stream: list[Reading] = []
    for t in range(60):
        for d in ("a", "b", "c", "d"):
            if rng.random() < 0.7:
                stream.append(Reading(d, "m", 1000.0 + t, rng.gauss(5, 1) + (20 if t == 40 else 0)))
    art = make_artifact(window_len=4)
    # The default threshold, and a short learning phase: the spike at t = 40 must make
    # anomalies and events, or the comparison of events below would compare nothing (with
    # the old scale's threshold of 3 nothing was ever anomalous).
    cfg = DetectionConfig(resolve_after=2, quiet_period=3, error_halflife=10, learn_readings=8)
    one = DetectionCore(art, LastValueForecaster(), cfg)
    single, single_events = [], []
    for r in stream:
        res = one.process([r])
        single += res.scored
        single_events += res.events
    batched_core = DetectionCore(art, LastValueForecaster(), cfg)
    batched, batched_events = [], []
    i = 0
    while i < len(stream):
        n = rng.randint(1, 40)
        res = batched_core.process(stream[i : i + n])
        batched += res.scored
        batched_events += res.events
        i += n
    key = lambda s: (s.reading.device, s.reading.ts)  # noqa: E731
    a = sorted(single, key=key)
    b = sorted(batched, key=key)
    assert len(a) == len(b) > 0
    assert [key(x) for x in a] == [key(x) for x in b]
    np.testing.assert_allclose([x.score for x in a], [x.score for x in b], rtol=1e-12)
    np.testing.assert_allclose([x.expected for x in a], [x.expected for x in b], rtol=1e-12)
    assert [x.is_anomaly for x in a] == [x.is_anomaly for x in b]
    assert sum(x.is_anomaly for x in a) > 0
    by_id = lambda e: (e.device, e.ts, e.state)  # noqa: E731
    assert any(e.state == "firing" for e in single_events)
    assert sorted(single_events, key=by_id) == sorted(batched_events, key=by_id)


def test_out_of_order_duplicate_and_too_many_series_are_dropped() -> None:
    art = make_artifact(window_len=2)
    core = DetectionCore(art, LastValueForecaster(), DetectionConfig(max_series=2))
    res = core.process(
        [
            Reading("a", "m", 10.0, 1.0),
            Reading("a", "m", 10.0, 1.0),  # duplicate
            Reading("a", "m", 9.0, 3.0),  # out of order
            Reading("a", "m", 10.0, 2.0),  # same ts, other value: out of order
            Reading("b", "m", 10.0, 1.0),
            Reading("c", "m", 10.0, 1.0),  # third series, max 2
        ]
    )
    assert [(d.reading.device, d.reason) for d in res.dropped] == [
        ("a", "duplicate"),
        ("a", "out_of_order"),
        ("a", "out_of_order"),
        ("c", "too_many_series"),
    ]
    assert core.active_series == 2
    assert core.warming_series == 2


def test_unknown_series_takes_its_scale_from_its_first_window() -> None:
    art = make_artifact(window_len=4, method="standard")
    core = DetectionCore(art, LastValueForecaster())
    core.process(readings("new", [1.0, 3.0, 1.0, 3.0, 2.0]))
    slot = core.store.slot("new/temp")
    # mean 2, std 1 of the first window [1, 3, 1, 3]
    assert core.scales.offset[slot] == pytest.approx(2.0)
    assert core.scales.scale[slot] == pytest.approx(1.0)


def test_idle_series_are_evicted() -> None:
    art = make_artifact(window_len=2)
    core = DetectionCore(art, LastValueForecaster(), DetectionConfig(idle_evict_s=60))
    core.process(readings("old", [1.0]), now=1000.0)
    core.process(readings("new", [1.0]), now=1100.0)
    assert core.evict_idle(now=1070.0).series == 1
    assert core.store.slot("old/temp") is None and core.active_series == 1


def test_snapshot_restore_gives_the_same_scores_as_no_restart() -> None:
    art = make_artifact(window_len=3)
    cfg = DetectionConfig(error_halflife=5)
    rng = random.Random(1)
    values = [rng.gauss(0, 1) for _ in range(40)]
    stream = readings("a", values)
    straight = DetectionCore(art, LastValueForecaster(), cfg)
    expected = [s.score for s in straight.process(stream).scored][-10:]
    first = DetectionCore(art, LastValueForecaster(), cfg)
    first.process(stream[:30])
    state = first.snapshot()
    second = DetectionCore(art, LastValueForecaster(), cfg)
    assert second.restore(state) == 1
    after = second.process(stream[30:])
    assert after.warming == 0
    assert [s.score for s in after.scored] == pytest.approx(expected, rel=1e-12)


def test_restore_refuses_another_models_checkpoint() -> None:
    core = DetectionCore(make_artifact(window_len=3), LastValueForecaster())
    state = core.snapshot()
    other = DetectionCore(make_artifact(window_len=4), LastValueForecaster())
    with pytest.raises(ValueError, match="window length"):
        other.restore(state)


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_a_stuck_sensor_fires_once_when_stuck_longer_than_ever(batch: int) -> None:
    art = make_artifact(
        window_len=3, per_series={"m1/temp": (0.0, 1.0)}, errors={"m1/temp": (0.0, 1.0)}
    )
    cfg = DetectionConfig(flatline_min=5, use_level=False, resolve_after=2, quiet_period=0)
    core = DetectionCore(art, LastValueForecaster(), cfg)
    base = [0.0, 0.5, -0.5] * 4
    # A run of 3 repeats (0.0 four times) is the longest completed one; then 0.5 is repeated
    # 12 times: its 5th repeat (the 6th 0.5) is the first longer than 3 and at least 5.
    values = base + [0.0] * 4 + base + [0.5] * 13 + base
    stream = readings("m1", values)
    scored, events = [], []
    for i in range(0, len(stream), batch):
        res = core.process(stream[i : i + batch])
        scored += res.scored
        events += res.events
    assert [e.state for e in events] == ["firing", "resolved"]
    stuck_from = len(base) * 2 + 4 + 5  # index of the 6th 0.5 in `values`
    assert events[0].ts == stream[stuck_from].ts
    assert [s.score == 1.0 for s in scored].count(True) == 13 - 5


# -- hostile input (issue 11) -----------------------------------------------------------------


def _trained_core(**cfg: object) -> DetectionCore:
    art = make_artifact(
        window_len=3,
        per_series={"m1/temp": (0.0, 1.0), "m2/temp": (0.0, 1.0)},
        errors={"m1/temp": (0.0, 1.0), "m2/temp": (0.0, 1.0)},
    )
    config = DetectionConfig(resolve_after=3, quiet_period=0, **cfg)  # type: ignore[arg-type]
    return DetectionCore(art, LastValueForecaster(), config)


@pytest.mark.parametrize("huge", [1e308, -1e308, 1.7e308, 1e16, math.nan, math.inf])
def test_a_huge_value_is_dropped_and_the_series_still_alerts(huge: float) -> None:
    # A single 1e308 used to be accepted: the series' statistics overflowed to inf and NaN,
    # its scores became NaN or 0, and a later +65 spike went unflagged.
    core = _trained_core()
    base = [0.0, 0.5, -0.5] * 8
    for device in ("m1", "m2"):
        core.process(readings(device, base))
    poisoned = core.process([Reading("m1", "temp", 1000.0 + len(base), huge)])
    assert [d.reason for d in poisoned.dropped] == ["out_of_range"]
    assert non_finite_state(core) == []
    after = [0.0, 0.5, -0.5] * 4 + [65.0] + [0.0, 0.5, -0.5] * 4
    t0 = 1000.0 + len(base) + 1
    for device in ("m1", "m2"):
        res = core.process(readings(device, after, t0=t0))
        fired = [e.value for e in res.events if e.state == "firing" and e.signal != "silence"]
        assert fired[:1] == [65.0], device
    assert non_finite_state(core) == []


def test_the_largest_value_allowed_keeps_every_statistic_finite() -> None:
    from detector.engine.core import MAX_ABS_VALUE

    core = _trained_core()
    values = [0.0, 0.5, -0.5] * 4 + [MAX_ABS_VALUE, -MAX_ABS_VALUE] * 20 + [0.0, 0.5] * 10
    res = core.process(readings("m1", values))
    assert res.dropped == []
    assert non_finite_state(core) == []
    assert all(math.isfinite(s.score) and 0.0 <= s.score <= 1.0 for s in res.scored)
    assert all(math.isfinite(x) for s in res.scored for x in (s.expected, s.lower, s.upper))


def test_a_reading_from_the_future_does_not_blind_its_series() -> None:
    # A reading stamped 295 s ahead (inside the decoder's max_future_s) used to make every
    # genuine reading of the next 290 s out_of_order. The clock (`now`) runs with the data.
    core = _trained_core()
    t0 = 1_700_000_000.0
    genuine = [Reading("m1", "temp", t0 + 10.0 * i, [0.0, 0.5, -0.5][i % 3]) for i in range(60)]
    future = Reading("m1", "temp", t0 + 10.0 * 20 + 295.0, 0.25)
    # Arrives at t0 + 201 s, and is redelivered (a reconnect) at t0 + 221 s.
    arrivals = [(r, r.ts) for r in genuine[:21]] + [(future, t0 + 201.0)]
    arrivals += [(r, r.ts) for r in genuine[21:23]] + [(future, t0 + 221.0)]
    arrivals += [(r, r.ts) for r in genuine[23:]]
    dropped, scored = [], []
    for r, now in arrivals:
        res = core.process([r], now=now)
        dropped += [(d.reading.ts, d.reason) for d in res.dropped]
        scored += [s.reading.ts for s in res.scored]
    assert dropped == [(future.ts, "duplicate")]
    assert [r.ts for r in genuine[3:]] == sorted(t for t in scored if t != future.ts)


def test_future_readings_cannot_move_the_order_bound_past_the_clock() -> None:
    core = _trained_core()
    now = 1_700_000_000.0
    core.process([Reading("m1", "temp", now - 1, 0.0)], now=now)
    core.process([Reading("m1", "temp", now + 290, 1.0)], now=now)
    slot = core.store.slot("m1/temp")
    assert core.store.last_ts[slot] == now + 290  # the newest ts is kept as it was
    assert core.store.order_ts[slot] == now + 2.0  # the bound is the clock plus the slack
    # A reading before the bound is still out of order, one after it is taken.
    res = core.process(
        [Reading("m1", "temp", now + 1.5, 2.0), Reading("m1", "temp", now + 3, 3.0)], now=now + 3
    )
    assert [(d.reading.ts, d.reason) for d in res.dropped] == [(now + 1.5, "out_of_order")]
    assert core.store.order_ts[slot] == now + 3


@pytest.mark.parametrize("batch", [1, 4, 100])
def test_redeliveries_in_the_window_are_duplicates_late_readings_are_out_of_order(
    batch: int,
) -> None:
    core = _trained_core()
    stream = readings("m1", [float(i % 5) for i in range(20)])
    for i in range(0, len(stream), batch):
        core.process(stream[i : i + batch])
    redelivered = stream[-3:]  # the window (3) holds them
    late = Reading("m1", "temp", stream[-2].ts - 0.5, 9.0)  # never seen
    changed = stream[-1]._replace(value=42.0)  # same ts, another value
    too_old = stream[5]  # a repeat no longer in the window: cannot be told from a late one
    res = core.process([*redelivered, late, changed, too_old])
    assert [d.reason for d in res.dropped] == [
        "duplicate",
        "duplicate",
        "duplicate",
        "out_of_order",
        "out_of_order",
        "out_of_order",
    ]


def test_a_repeat_within_one_batch_is_a_duplicate() -> None:
    core = _trained_core()
    r = readings("m1", [1.0, 2.0, 3.0])
    res = core.process([r[0], r[1], r[0], r[1], r[2], r[1]])
    assert [d.reason for d in res.dropped] == ["duplicate"] * 3
