"""Faults of the simulated factory: what each kind does to a sensor, and its ground truth.

Pure: numpy only. The simulator (`detector.sim.simulation`) draws a fault's size from its own
random stream and calls `apply_faults` after measuring, so a run with faults equals the same
run without them outside the faults' intervals.

Kinds, with the default size (drawn per fault; `SCALE` is a metric's typical spread while a
machine runs: temperature 2 K, vibration 0.4 mm/s, pressure 0.4 bar, current 4 A; `NOISE` its
sensor noise: 0.1 K, 0.03 mm/s, 0.02 bar, 0.15 A) and default length (in readings, random
faults × U(0.5, 1.5)):

=============  =====================================================================  =======
kind           what the sensor does                                                   length
=============  =====================================================================  =======
spike          ± 4-8 × SCALE added (current and vibration only upwards)               1-3
level_shift    ± 1.5-3 × SCALE added (an offset, a loose mounting)                    60
drift          an offset growing linearly to ± 2-4 × SCALE (a sensor ageing)          180
stuck          repeats the value it read when the fault began                         30
noise_burst    extra noise of 8-15 × NOISE (a bad contact, interference)              30
silent         the whole device stops reporting (dropout)                             20
oscillation    a sinusoid of 0.5-1 × SCALE amplitude, period 3-8 readings             60
               (a control loop hunting); only while the machine runs
decoupled      relational: keeps following the machine's state from before the        90
               fault (its load and on/off state) while the machine changes state;
               stays inside the sensor's normal range
current_rise   relational: current rises by 10-25 % of the machine's full-load        120
               current over the first third of the fault (while running), vibration,
               pressure and temperature do not follow; inside the normal range
=============  =====================================================================  =======
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

LEGACY_KINDS = ("spike", "level_shift", "drift", "stuck", "noise_burst", "silent")
"""The kinds random faults are drawn from unless asked otherwise (the demo's and examples')."""
RELATIONAL_KINDS = ("decoupled", "current_rise")
"""Kinds that show only as a broken relation between a machine's sensors."""
FAULT_KINDS = (*LEGACY_KINDS, "oscillation", *RELATIONAL_KINDS)
RUNNING_KINDS = ("oscillation", "current_rise")
"""Kinds that only make physical sense while the machine runs."""
ALL_METRICS = "*"  # the metric of a `silent` fault: the whole device stops reporting

NOISE = {"temperature": 0.1, "vibration": 0.03, "pressure": 0.02, "current": 0.15}
"""Sensor noise std per metric (metric units)."""
SCALE = {"temperature": 2.0, "vibration": 0.4, "pressure": 0.4, "current": 4.0}
"""A typical spread of a metric while running: what fault sizes scale by."""
FAULT_SAMPLES = {
    "spike": 1,
    "level_shift": 60,
    "drift": 180,
    "stuck": 30,
    "noise_burst": 30,
    "silent": 20,
    "oscillation": 60,
    "decoupled": 90,
    "current_rise": 120,
}
"""Default fault lengths in samples (nominal intervals)."""
OSCILLATION_PERIOD = (3.0, 8.0)
"""Period of an oscillation fault, in readings (drawn uniformly)."""
CURRENT_RISE_FRACTION = (0.10, 0.25)
"""Excess current of a current_rise fault, as a fraction of full-load current."""


@dataclass(frozen=True)
class FaultSpec:
    """A fault asked for by the user: `offset_s` after the simulation's start.

    None for `duration_s` or `magnitude` means the default for the kind and metric.
    """

    device: str
    metric: str
    kind: str
    offset_s: float
    duration_s: float | None = None
    magnitude: float | None = None


@dataclass(frozen=True)
class Fault:
    """Ground truth of one injected fault; it affects readings with ``start_ts <= ts < end_ts``.

    `magnitude` means: spike and level_shift, the offset added (metric units); drift, the
    offset reached at `end_ts`; noise_burst, the std of the added noise in units of the
    sensor's own noise; oscillation, the amplitude (metric units); current_rise, the excess
    current reached (A); stuck, silent and decoupled, 0. A silent fault's metric is ``"*"``.
    `period_s` is an oscillation's period (0 for other kinds).
    """

    kind: str
    device: str
    metric: str
    start_ts: float
    end_ts: float
    magnitude: float
    period_s: float = 0.0

    def to_dict(self) -> dict[str, str | float]:
        return asdict(self)

    def line(self) -> str:
        """One line for logs and the console, ``key=value`` pairs."""
        text = (
            f"fault kind={self.kind} device={self.device} metric={self.metric} "
            f"start_ts={self.start_ts:.3f} end_ts={self.end_ts:.3f} "
            f"magnitude={self.magnitude:.4g}"
        )
        return text + (f" period_s={self.period_s:.4g}" if self.period_s else "")


@dataclass
class ActiveFault:
    """A scheduled or running fault and the state it keeps while it runs."""

    fault: Fault
    d: int  # device index
    m: int  # metric column, -1 for the whole device
    held: float | None = None  # a stuck sensor's frozen value
    phase: float = 0.0  # an oscillation's phase at its start
    ghost: dict[str, float] | None = None  # a decoupled sensor's old machine state


class FaultInjector:
    """Which faults run when: the user's, plus random ones at `rate_per_h` plant-wide.

    Owns the fault streams (`rng` for schedule and sizes, `noise_rng` for noise bursts), so
    faults never disturb the clean signal. `truth` lists the faults that have started.
    """

    def __init__(
        self,
        devices: tuple[str, ...],
        metrics: tuple[str, ...],
        interval_s: float,
        start_ts: float,
        full_load_a: np.ndarray,
        rng: np.random.Generator,
        noise_rng: np.random.Generator,
        rate_per_h: float = 0.0,
        kinds: tuple[str, ...] = LEGACY_KINDS,
    ) -> None:
        self.devices, self.metrics = devices, metrics
        self.interval_s, self.start_ts = interval_s, start_ts
        self.full_load_a = full_load_a
        self.rng, self.noise_rng = rng, noise_rng
        self.rate_per_h, self.kinds = rate_per_h, kinds
        self.scheduled: list[ActiveFault] = []
        self.active: list[ActiveFault] = []
        self.truth: list[Fault] = []
        self._next_random_ts = self._draw_next_random(start_ts)

    def schedule(self, specs: Sequence[FaultSpec]) -> None:
        """Add faults (offsets from the simulation's start); their sizes are drawn now."""
        self.scheduled.extend(self._from_spec(s) for s in specs)
        self.scheduled.sort(key=lambda a: a.fault.start_ts)

    def _index(self, device: str, metric: str, kind: str) -> tuple[int, int]:
        if device not in self.devices:
            raise ValueError(f"unknown device {device!r}; devices: {', '.join(self.devices)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; kinds: {', '.join(FAULT_KINDS)}")
        if kind == "silent":
            return self.devices.index(device), -1
        if metric not in self.metrics:
            raise ValueError(f"unknown metric {metric!r}; metrics: {', '.join(self.metrics)}")
        if kind == "current_rise" and metric != "current":
            raise ValueError(f"a current_rise fault is on the current, not on {metric!r}")
        return self.devices.index(device), self.metrics.index(metric)

    def _from_spec(self, spec: FaultSpec) -> ActiveFault:
        d, m = self._index(spec.device, spec.metric, spec.kind)
        metric = ALL_METRICS if m < 0 else spec.metric
        duration = spec.duration_s
        if duration is None:
            duration = FAULT_SAMPLES[spec.kind] * self.interval_s
        magnitude = spec.magnitude
        if magnitude is None or spec.kind in ("stuck", "silent", "decoupled"):
            magnitude = default_magnitude(spec.kind, metric, self.rng, float(self.full_load_a[d]))
        period_s, phase = 0.0, 0.0
        if spec.kind == "oscillation":
            period_s = float(self.rng.uniform(*OSCILLATION_PERIOD)) * self.interval_s
            phase = float(self.rng.uniform(0, 2 * math.pi))
        start = self.start_ts + spec.offset_s
        fault = Fault(
            spec.kind, spec.device, metric, start, start + duration, float(magnitude), period_s
        )
        return ActiveFault(fault, d, m, phase=phase)

    def _draw_next_random(self, after_ts: float) -> float:
        if self.rate_per_h <= 0:
            return math.inf
        return after_ts + self.rng.exponential(3_600.0 / self.rate_per_h)

    def _random_fault(self, start_ts: float) -> ActiveFault | None:
        rng = self.rng
        kind = str(rng.choice(self.kinds))
        # One fault at a time per device keeps the ground truth unambiguous.
        busy = {a.d for a in (*self.active, *self.scheduled) if a.fault.end_ts > start_ts}
        free = [d for d in range(len(self.devices)) if d not in busy]
        if not free:
            return None
        d = int(rng.choice(free))
        metric = str(rng.choice(self.metrics))
        if kind == "current_rise":
            if "current" not in self.metrics:
                return None
            metric = "current"
        samples = FAULT_SAMPLES[kind]
        if kind == "spike":
            samples = int(rng.integers(1, 4))
        duration = samples * self.interval_s * (1 if kind == "spike" else rng.uniform(0.5, 1.5))
        spec = FaultSpec(self.devices[d], metric, kind, start_ts - self.start_ts, duration)
        return self._from_spec(spec)

    def start(self, ts: float) -> None:
        """Start the faults due by `ts` and retire those that ended."""
        while self._next_random_ts <= ts:
            active = self._random_fault(self._next_random_ts)
            if active is not None:
                self.scheduled.append(active)
                self.scheduled.sort(key=lambda a: a.fault.start_ts)
            self._next_random_ts = self._draw_next_random(self._next_random_ts)
        self.active = [a for a in self.active if a.fault.end_ts > ts]
        while self.scheduled and self.scheduled[0].fault.start_ts <= ts:
            active = self.scheduled.pop(0)
            if active.fault.end_ts > ts:  # a fault shorter than the step may fall in between
                self.active.append(active)
            self.truth.append(active.fault)

    def apply(
        self,
        ts: float,
        values: np.ndarray,
        present: np.ndarray,
        motor: np.ndarray,
        ghost_value: Callable[[ActiveFault], float],
    ) -> None:
        """`apply_faults` with the running faults."""
        if self.active:
            apply_faults(
                self.active, ts, values, present, self.metrics, self.noise_rng, motor, ghost_value
            )


def default_magnitude(
    kind: str, metric: str, rng: np.random.Generator, full_load_a: float
) -> float:
    """A fault's size drawn from `rng` (see the table in the module docstring)."""
    if kind == "noise_burst":
        return float(rng.uniform(8, 15))
    if kind == "oscillation":
        return float(rng.uniform(0.5, 1.0) * SCALE[metric])
    if kind == "current_rise":
        return float(rng.uniform(*CURRENT_RISE_FRACTION) * full_load_a)
    low, high = {"spike": (4, 8), "level_shift": (1.5, 3), "drift": (2, 4)}.get(kind, (0, 0))
    if high == 0:
        return 0.0
    # Current and vibration only go up when something is wrong (friction, wear).
    sign = rng.choice([-1.0, 1.0]) if metric in ("temperature", "pressure") else 1.0
    return float(sign * rng.uniform(low, high) * SCALE[metric])


def apply_faults(
    active: list[ActiveFault],
    ts: float,
    values: np.ndarray,
    present: np.ndarray,
    metrics: tuple[str, ...],
    noise_rng: np.random.Generator,
    motor: np.ndarray,
    ghost_value: Callable[[ActiveFault], float],
) -> None:
    """Change `values` ``(devices, metrics)`` and `present` in place for the `active` faults.

    `motor` (0 stopped .. 1 running) gates the kinds that need a running machine;
    `ghost_value(a)` is what a decoupled sensor reads (the simulator knows the physics).
    """
    for a in active:
        f, d, m = a.fault, a.d, a.m
        kind = f.kind
        if kind == "silent":
            present[d] = False
        elif kind in ("spike", "level_shift"):
            values[d, m] += f.magnitude
        elif kind == "drift":
            values[d, m] += f.magnitude * (ts - f.start_ts) / (f.end_ts - f.start_ts)
        elif kind == "noise_burst":
            values[d, m] += noise_rng.normal(0.0, f.magnitude * NOISE[metrics[m]])
        elif kind == "stuck":
            if a.held is None:
                a.held = float(values[d, m])
            values[d, m] = a.held
        elif kind == "oscillation":
            angle = 2 * math.pi * (ts - f.start_ts) / f.period_s + a.phase
            values[d, m] += motor[d] * f.magnitude * math.sin(angle)
        elif kind == "current_rise":
            ramp = min(1.0, 3.0 * (ts - f.start_ts) / (f.end_ts - f.start_ts))
            values[d, m] += motor[d] * f.magnitude * ramp
        elif kind == "decoupled":
            values[d, m] = ghost_value(a)
