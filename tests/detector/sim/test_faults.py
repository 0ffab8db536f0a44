"""The new fault kinds: what each does to a sensor, on small literal examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.sim.faults import ActiveFault, Fault, apply_faults
from detector.sim.simulation import FactoryConfig, FactorySimulator, FaultSpec

MONDAY = 1_704_067_200.0
H = 3_600.0
METRICS = ("temperature", "current")


def applied(fault: Fault, ts: float, motor: float = 1.0, phase: float = 0.0) -> float:
    """The value of a 10.0 reading on device 0, column 1, after `fault` at `ts`."""
    values = np.full((1, 2), 10.0)
    present = np.ones(1, dtype=bool)
    active = ActiveFault(fault, 0, 1, phase=phase)
    rng = np.random.default_rng(0)
    apply_faults([active], ts, values, present, METRICS, rng, np.array([motor]), lambda a: 0.0)
    assert values[0, 0] == 10.0  # the other sensor is untouched
    return float(values[0, 1])


def test_oscillation_is_a_sinusoid_of_its_period_and_amplitude() -> None:
    f = Fault("oscillation", "m", "current", 1000.0, 2000.0, 2.0, period_s=240.0)
    # A quarter period per 60 s reading: 0, +2, 0, -2.
    got = [applied(f, 1000.0 + k * 60) for k in range(4)]
    assert got == pytest.approx([10.0, 12.0, 10.0, 8.0])
    assert applied(f, 1060.0, phase=math.pi) == pytest.approx(8.0)
    assert applied(f, 1060.0, motor=0.0) == 10.0  # a stopped machine does not hunt


def test_current_rise_ramps_over_the_first_third_then_holds() -> None:
    f = Fault("current_rise", "m", "current", 1000.0, 1300.0, 3.0)
    # ramp = min(1, 3 * elapsed / 300): 0, 0.5, 1, 1.
    got = [applied(f, t) for t in (1000.0, 1050.0, 1100.0, 1250.0)]
    assert got == pytest.approx([10.0, 11.5, 13.0, 13.0])
    assert applied(f, 1250.0, motor=0.5) == pytest.approx(11.5)


def test_decoupled_sensor_reads_what_its_ghost_says() -> None:
    f = Fault("decoupled", "m", "current", 1000.0, 1300.0, 0.0)
    values = np.full((1, 2), 10.0)
    active = ActiveFault(f, 0, 1)
    rng = np.random.default_rng(0)
    apply_faults(
        [active], 1000.0, values, np.ones(1, bool), METRICS, rng, np.ones(1), lambda a: 4.5
    )
    assert values.tolist() == [[10.0, 4.5]]


def test_a_decoupled_current_keeps_reading_stopped_while_the_machine_starts() -> None:
    # Two shifts, no stagger: the machines start at 06:00 and ramp over 5 minutes. The
    # current sensor of machine 0 is decoupled from 06:00 for 30 minutes.
    config = FactoryConfig(n_devices=2, seed=4, stagger_max_s=0.0, ramp_s=(300.0, 300.0))
    start = MONDAY + 5 * H
    spec = FaultSpec("line1-press01", "current", "decoupled", H, 30 * 60)
    faulty, clean = FactorySimulator(config, start, [spec]), FactorySimulator(config, start)
    ts = start + 60.0 * np.arange(120)
    a = np.array([faulty.step_arrays(t)[0] for t in ts])
    b = np.array([clean.step_arrays(t)[0] for t in ts])
    during = (ts >= start + H) & (ts < start + H + 30 * 60)
    current = faulty.metrics.index("current")
    # Stopped: 0.05 A plus noise of 0.3 * 0.15 A; running: well above 5 A for this press.
    assert (a[during, 0, current] < 0.3).all() and (b[during, 0, current][10:] > 5).all()
    assert (a[~during] == b[~during]).all()  # nothing else changed, before or after
    assert (a[:, 1] == b[:, 1]).all() and (a[:, 0, :current] == b[:, 0, :current]).all()
    (truth,) = faulty.truth
    assert (truth.kind, truth.magnitude, truth.end_ts - truth.start_ts) == ("decoupled", 0, 1800)


def test_current_rise_is_only_on_the_current() -> None:
    config = FactoryConfig(n_devices=1)
    with pytest.raises(ValueError, match="current_rise"):
        FactorySimulator(
            config, MONDAY, [FaultSpec("line1-press01", "pressure", "current_rise", 0)]
        )
