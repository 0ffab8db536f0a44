"""When simulated machines run: schedules per line, random stops, ramps, simultaneous starts."""

from __future__ import annotations

import numpy as np
import pytest

from detector.sim.plant_schedule import EventCalendar, fleet_running
from detector.sim.simulation import FactoryConfig, FactorySimulator

MONDAY = 1_704_067_200.0  # 2024-01-01 00:00 UTC, a Monday
H = 3_600.0
SCHEDULES = ("24/7", "3", "2", "1")


@pytest.mark.parametrize(
    ("hour_of_week", "expected"),
    [
        (3, [True, False, False, False]),  # Monday 03:00: only 24/7 (3 shifts start at 06:00)
        (7, [True, True, True, True]),  # Monday 07:00: everyone
        (15, [True, True, True, False]),  # Monday 15:00: the one-shift line has gone home
        (23, [True, True, False, False]),  # Monday 23:00: night shift and 24/7
        (24 * 5 + 3, [True, True, False, False]),  # Saturday 03:00: the night shift ends 06:00
        (24 * 5 + 10, [True, False, False, False]),  # Saturday 10:00: only 24/7
    ],
)
def test_each_line_follows_its_own_schedule(hour_of_week: float, expected: list[bool]) -> None:
    zero = np.zeros(4)
    got = fleet_running(MONDAY + hour_of_week * H, SCHEDULES, zero, zero + 4 * H, zero)
    assert got.tolist() == expected


def test_calendar_events_do_not_depend_on_how_often_it_is_asked() -> None:
    seed = np.random.SeedSequence(42)
    rate = 1 / (6 * H)  # one event per machine every 6 hours on average
    fine = EventCalendar(3, rate, 600.0, 1200.0, seed, start_ts=MONDAY)
    coarse = EventCalendar(3, rate, 600.0, 1200.0, seed, start_ts=MONDAY)
    ts = MONDAY + 60.0 * np.arange(3 * 24 * 60)
    active = np.array([fine.active(t) for t in ts])
    coarse.active(ts[-1])
    assert sorted(fine.events) == sorted(coarse.events)
    assert len(fine.events) > 20
    for machine, start, end in fine.events:
        assert 600.0 <= end - start <= 1200.0
        inside = (ts >= start) & (ts < end)
        assert active[inside, machine].all()
    assert not EventCalendar(2, 0.0, 60.0, 60.0, seed, MONDAY).active(MONDAY + 1e6).any()


def plant(**changes: object) -> FactoryConfig:
    fields = {"n_devices": 4, "shifts": "2", "seed": 2, "stagger_max_s": 0.0, **changes}
    return FactoryConfig(**fields)  # type: ignore[arg-type]


def states(config: FactoryConfig, ts: np.ndarray) -> list[dict[str, np.ndarray]]:
    sim = FactorySimulator(config, float(ts[0]))
    out = []
    for t in ts:
        sim.step_arrays(t)
        out.append(sim.state())
    return out


def test_a_ramped_start_is_linear_over_the_ramp_time() -> None:
    # Ten-minute ramps sampled each minute: 0.1 more of full speed per reading from 06:00.
    ts = MONDAY + 6 * H + 60.0 * np.arange(-2, 12)
    motor = np.array([s["motor"] for s in states(plant(ramp_s=(600.0, 600.0)), ts)])
    expected = [0, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0]
    for m in range(4):
        assert motor[:, m] == pytest.approx(expected)


def test_simultaneous_plant_starts_at_once_and_staggered_one_does_not() -> None:
    ts = MONDAY + 5 * H + 60.0 * np.arange(180)

    def first_on(config: FactoryConfig) -> np.ndarray:
        running = np.array([s["running"] for s in states(config, ts)])
        return ts[running.argmax(axis=0)]

    assert set(first_on(plant()).tolist()) == {MONDAY + 6 * H}
    staggered = first_on(plant(stagger_max_s=3600.0))
    assert staggered.min() >= MONDAY + 6 * H and staggered.max() - staggered.min() > 10 * 60


def test_maintenance_stops_a_machine_that_should_run() -> None:
    config = plant(maintenance_per_month=60.0)  # two a day: a few in a working day
    sim = FactorySimulator(config, MONDAY)
    ts = MONDAY + 60.0 * np.arange(24 * 60)
    stopped = []
    for t in ts:
        sim.step_arrays(t)
        s = sim.state()
        assert not (s["running"] & s["maintenance"]).any()
        stopped.append(s["maintenance"])
    assert np.array(stopped).any()
    for _, start, end in sim.maintenance.events:
        assert 1800.0 <= end - start <= 14_400.0


def test_idle_machine_runs_at_the_idle_load() -> None:
    config = plant(idle_per_day=12.0, idle_s=(1200.0, 1200.0))
    found = 0
    for s in states(config, MONDAY + 8 * H + 60.0 * np.arange(8 * 60)):
        idle_running = s["idle"] & s["running"]
        assert np.all(s["setpoint"] >= 0.5)
        found += int(idle_running.sum())
    assert found > 0
