"""A simulated factory: machines on production lines, their sensors, and injected faults.

Pure: numpy only, no I/O and no wall clock. `FactorySimulator.step(ts)` advances the plant to
`ts` (epoch seconds, any spacing) and returns one value per series; `generate_history` runs it
over a time range. The MQTT and CSV edges live in `detector.simulate_cli`.

The signal model, per machine: a shift schedule switches it on and off; a motor state follows
with a short lag; a load setpoint changes at shift starts and at random while running; a shared
load fluctuation moves current, vibration and pressure together; temperature follows ambient
(daily cycle) plus the heat of the running machine with first-order heating/cooling lags.
Faults use their own random stream, so a run with faults equals the same run without them
outside the declared fault intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from detector.readings import Reading

DAY_S = 86_400.0
HOUR_S = 3_600.0
# 1970-01-01 was a Thursday; shifting by 3 days makes weekday 0 Monday (as in features.py).
_WEEK_ORIGIN_S = 3 * DAY_S

METRICS = ("temperature", "vibration", "pressure", "current")
FAULT_KINDS = ("spike", "level_shift", "drift", "stuck", "noise_burst", "silent")
SHIFT_SCHEDULES = ("24/7", "3", "2", "1")
ALL_METRICS = "*"  # the metric of a `silent` fault: the whole device stops reporting

# Per metric: sensor noise std, and a typical spread while running (what fault sizes scale by).
_NOISE = {"temperature": 0.1, "vibration": 0.03, "pressure": 0.02, "current": 0.15}
_SCALE = {"temperature": 2.0, "vibration": 0.4, "pressure": 0.4, "current": 4.0}
# Default fault lengths in samples (nominal intervals), scaled by U(0.5, 1.5) for random faults.
_FAULT_SAMPLES = {
    "spike": 1,
    "level_shift": 60,
    "drift": 180,
    "stuck": 30,
    "noise_burst": 30,
    "silent": 20,
}
# Machine kinds: (temperature rise K, full-load current A, vibration mm/s, pressure bar).
_KINDS = {
    "press": (18.0, 40.0, 4.0, 6.0),
    "mill": (25.0, 22.0, 2.5, 3.0),
    "pump": (12.0, 15.0, 1.5, 8.0),
    "oven": (60.0, 30.0, 0.3, 1.5),
    "lathe": (20.0, 18.0, 2.0, 2.5),
    "compressor": (30.0, 35.0, 3.0, 9.0),
}


@dataclass(frozen=True)
class FactoryConfig:
    """What the simulated plant looks like.

    `interval_s` is the nominal sampling period of one series; fault lengths are counted in
    it. `fault_rate_per_h` is the mean number of random faults per simulated hour, plant-wide.
    """

    n_devices: int = 6
    machines_per_line: int = 3
    metrics: tuple[str, ...] = METRICS
    shifts: str = "2"
    interval_s: float = 60.0
    seed: int = 0
    fault_rate_per_h: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS

    def __post_init__(self) -> None:
        if self.n_devices < 1 or self.machines_per_line < 1:
            raise ValueError("need at least one device and one machine per line")
        if not self.metrics or set(self.metrics) - set(METRICS):
            raise ValueError(f"metrics must be a non-empty subset of {METRICS}")
        if self.shifts not in SHIFT_SCHEDULES:
            raise ValueError(f"shifts must be one of {SHIFT_SCHEDULES}, not {self.shifts!r}")
        if self.interval_s <= 0 or self.fault_rate_per_h < 0:
            raise ValueError("interval_s must be > 0 and fault_rate_per_h >= 0")
        if not self.fault_kinds or set(self.fault_kinds) - set(FAULT_KINDS):
            raise ValueError(f"fault_kinds must be a non-empty subset of {FAULT_KINDS}")


def device_names(n_devices: int, machines_per_line: int = 3) -> list[str]:
    """Names like ``line1-press01``: the line, the machine kind, its place on the line."""
    kinds = list(_KINDS)
    names = []
    for i in range(n_devices):
        line, place = divmod(i, machines_per_line)
        names.append(f"line{line + 1}-{kinds[i % len(kinds)]}{place + 1:02d}")
    return names


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
    sensor's own noise; stuck and silent, 0. A silent fault's metric is ``"*"``.
    """

    kind: str
    device: str
    metric: str
    start_ts: float
    end_ts: float
    magnitude: float

    def to_dict(self) -> dict[str, str | float]:
        return asdict(self)

    def line(self) -> str:
        """One line for logs and the console, ``key=value`` pairs."""
        return (
            f"fault kind={self.kind} device={self.device} metric={self.metric} "
            f"start_ts={self.start_ts:.3f} end_ts={self.end_ts:.3f} "
            f"magnitude={self.magnitude:.4g}"
        )


@dataclass
class _Active:
    fault: Fault
    d: int  # device index
    m: int  # metric column, -1 for the whole device
    held: float | None = None  # a stuck sensor's frozen value


def _weekday_and_tod(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.floor((ts + _WEEK_ORIGIN_S) / DAY_S) % 7, np.mod(ts, DAY_S)


def shift_running(
    ts: float, shifts: str, stagger_s: np.ndarray, break_at_s: np.ndarray, break_s: np.ndarray
) -> np.ndarray:
    """Which machines run at `ts` (UTC) under a shift schedule, one bool per machine.

    ``"3"``: Monday 06:00 to Saturday 06:00; ``"2"``: weekdays 06:00-22:00; ``"1"``: weekdays
    06:00-14:00; ``"24/7"``: always. Each machine starts `stagger_s` late and, except 24/7,
    pauses `break_s` from `break_at_s` into every 8-hour shift.
    """
    if shifts == "24/7":
        return np.ones(stagger_s.shape, dtype=bool)
    dow, tod = _weekday_and_tod(ts - stagger_s)
    weekday = dow < 5
    if shifts == "3":
        on = (weekday & (tod >= 6 * HOUR_S)) | ((dow >= 1) & (dow <= 5) & (tod < 6 * HOUR_S))
    else:
        end_h = 22 if shifts == "2" else 14
        on = weekday & (tod >= 6 * HOUR_S) & (tod < end_h * HOUR_S)
    into_shift = np.mod(tod - 6 * HOUR_S, 8 * HOUR_S)
    pause = (into_shift >= break_at_s) & (into_shift < break_at_s + break_s)
    return on & ~pause


class FactorySimulator:
    """Machines × metrics, stepped through time; pure and deterministic for a seed.

    `faults` are injected at ``start_ts + offset_s``; `config.fault_rate_per_h` adds random
    ones. After each step, `truth` lists the faults that have started (in order) and
    `running` says which machines were on.

    >>> sim = FactorySimulator(FactoryConfig(n_devices=2, seed=1), start_ts=1_704_326_400)
    >>> len(sim.step(1_704_326_400)), sim.devices[0]
    (8, 'line1-press01')
    """

    def __init__(
        self, config: FactoryConfig, start_ts: float, faults: Sequence[FaultSpec] = ()
    ) -> None:
        self.config = config
        self.start_ts = float(start_ts)
        self.devices = tuple(device_names(config.n_devices, config.machines_per_line))
        self.metrics = tuple(config.metrics)
        seeds = np.random.SeedSequence(config.seed).spawn(4)
        # Separate streams: machine parameters, signal noise, fault schedule, fault noise; so
        # adding faults never changes the clean signal.
        params, self._rng, self._fault_rng, self._fault_noise = map(np.random.default_rng, seeds)
        n = config.n_devices
        kinds = np.array([_KINDS[name.split("-")[1].rstrip("0123456789")] for name in self.devices])
        jitter = params.uniform(0.85, 1.15, size=(n, 4))
        self._rise, self._full_a, self._vib, self._bar = (kinds * jitter).T
        self._stagger_s = params.uniform(0, 20 * 60, n)
        self._break_at_s = params.uniform(3.5, 4.5, n) * HOUR_S
        self._break_s = params.choice([0.0, 20 * 60, 30 * 60], n)  # some never pause
        self._heat_tau_s = params.uniform(15, 30, n) * 60
        self._cool_tau_s = self._heat_tau_s * params.uniform(1.5, 2.5, n)
        self._ambient_offset = params.normal(0.0, 1.0, n)
        self._scheduled = sorted(
            (self._from_spec(s) for s in faults), key=lambda a: a.fault.start_ts
        )
        self._next_random_ts = self._draw_next_random(self.start_ts)
        self._active: list[_Active] = []
        self.truth: list[Fault] = []  # faults that have started, in order
        self._last_ts: float | None = None
        self.running = np.zeros(n, dtype=bool)

    # -- faults -----------------------------------------------------------------------------

    def _index(self, device: str, metric: str, kind: str) -> tuple[int, int]:
        if device not in self.devices:
            raise ValueError(f"unknown device {device!r}; devices: {', '.join(self.devices)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; kinds: {', '.join(FAULT_KINDS)}")
        if kind == "silent":
            return self.devices.index(device), -1
        if metric not in self.metrics:
            raise ValueError(f"unknown metric {metric!r}; metrics: {', '.join(self.metrics)}")
        return self.devices.index(device), self.metrics.index(metric)

    def _default_magnitude(self, kind: str, metric: str) -> float:
        rng = self._fault_rng
        if kind == "noise_burst":
            return float(rng.uniform(8, 15))
        low, high = {"spike": (4, 8), "level_shift": (1.5, 3), "drift": (2, 4)}.get(kind, (0, 0))
        if high == 0:
            return 0.0
        # Current and vibration only go up when something is wrong (friction, wear).
        sign = rng.choice([-1.0, 1.0]) if metric in ("temperature", "pressure") else 1.0
        return float(sign * rng.uniform(low, high) * _SCALE[metric])

    def _from_spec(self, spec: FaultSpec) -> _Active:
        d, m = self._index(spec.device, spec.metric, spec.kind)
        metric = ALL_METRICS if m < 0 else spec.metric
        duration = spec.duration_s
        if duration is None:
            duration = _FAULT_SAMPLES[spec.kind] * self.config.interval_s
        magnitude = spec.magnitude
        if magnitude is None or spec.kind in ("stuck", "silent"):
            magnitude = self._default_magnitude(spec.kind, metric)
        start = self.start_ts + spec.offset_s
        fault = Fault(spec.kind, spec.device, metric, start, start + duration, float(magnitude))
        return _Active(fault, d, m)

    def _draw_next_random(self, after_ts: float) -> float:
        if self.config.fault_rate_per_h <= 0:
            return math.inf
        return after_ts + self._fault_rng.exponential(HOUR_S / self.config.fault_rate_per_h)

    def _random_fault(self, start_ts: float) -> _Active | None:
        rng = self._fault_rng
        kind = str(rng.choice(self.config.fault_kinds))
        # One fault at a time per device keeps the ground truth unambiguous.
        busy = {a.d for a in (*self._active, *self._scheduled) if a.fault.end_ts > start_ts}
        free = [d for d in range(len(self.devices)) if d not in busy]
        if not free:
            return None
        d = int(rng.choice(free))
        metric = str(rng.choice(self.metrics))
        samples = _FAULT_SAMPLES[kind]
        if kind == "spike":
            samples = int(rng.integers(1, 4))
        duration = (
            samples * self.config.interval_s * (1 if kind == "spike" else rng.uniform(0.5, 1.5))
        )
        spec = FaultSpec(self.devices[d], metric, kind, start_ts - self.start_ts, duration)
        return self._from_spec(spec)

    def _start_faults(self, ts: float) -> None:
        while self._next_random_ts <= ts:
            active = self._random_fault(self._next_random_ts)
            if active is not None:
                self._scheduled.append(active)
                self._scheduled.sort(key=lambda a: a.fault.start_ts)
            self._next_random_ts = self._draw_next_random(self._next_random_ts)
        self._active = [a for a in self._active if a.fault.end_ts > ts]
        while self._scheduled and self._scheduled[0].fault.start_ts <= ts:
            active = self._scheduled.pop(0)
            if active.fault.end_ts > ts:  # a fault shorter than the step may fall in between
                self._active.append(active)
            self.truth.append(active.fault)

    def _apply_faults(self, ts: float, values: np.ndarray, present: np.ndarray) -> None:
        for a in self._active:
            f, d, m = a.fault, a.d, a.m
            if f.kind == "silent":
                present[d] = False
            elif f.kind in ("spike", "level_shift"):
                values[d, m] += f.magnitude
            elif f.kind == "drift":
                values[d, m] += f.magnitude * (ts - f.start_ts) / (f.end_ts - f.start_ts)
            elif f.kind == "noise_burst":
                sigma = f.magnitude * _NOISE[self.metrics[m]]
                values[d, m] += self._fault_noise.normal(0.0, sigma)
            elif f.kind == "stuck":
                if a.held is None:
                    a.held = float(values[d, m])
                values[d, m] = a.held

    # -- signals ----------------------------------------------------------------------------

    def _init_state(self, ts: float) -> None:
        n = len(self.devices)
        self.running = self._running(ts)
        self._motor = self.running.astype(float)
        self._setpoint = self._rng.uniform(0.5, 1.0, n)
        self._load = self._setpoint.copy()
        self._fluct = np.zeros(n)
        self._ambient_walk = 0.0
        self._pressure = self._pressure_target()
        self._temp = self._temp_target(ts)

    def _running(self, ts: float) -> np.ndarray:
        cfg = self.config
        return shift_running(ts, cfg.shifts, self._stagger_s, self._break_at_s, self._break_s)

    def _ambient(self, ts: float) -> float:
        # Warmest mid-afternoon, coolest before dawn, plus slow weather.
        return (
            21.0
            + 3.0 * math.sin(2 * math.pi * (ts % DAY_S - 9 * HOUR_S) / DAY_S)
            + (self._ambient_walk)
        )

    def _temp_target(self, ts: float) -> np.ndarray:
        heat = self._motor * self._rise * (0.5 + 0.5 * self._load)
        return self._ambient(ts) + self._ambient_offset + heat

    def _pressure_target(self) -> np.ndarray:
        return 1.0 + self._motor * self._bar * (0.7 + 0.3 * self._load + 0.05 * self._fluct)

    def _advance(self, ts: float, dt: float) -> None:
        rng, n = self._rng, len(self.devices)

        def decay(tau_s: float | np.ndarray) -> np.ndarray | float:
            return np.exp(-dt / tau_s)

        def ou(x: np.ndarray | float, tau_s: float, sigma: float) -> np.ndarray | float:
            # Exact Ornstein-Uhlenbeck step: the same statistics whatever the step size.
            a = math.exp(-dt / tau_s)
            return x * a + sigma * math.sqrt(1 - a * a) * rng.standard_normal(np.shape(x))

        was_running = self.running
        self.running = self._running(ts)
        # New product at each start, and occasional setpoint changes while running.
        change = rng.random(n) < 1 - math.exp(-dt / (3 * HOUR_S))
        new_setpoint = rng.uniform(0.5, 1.0, n)
        change = (change & self.running) | (self.running & ~was_running)
        self._setpoint = np.where(change, new_setpoint, self._setpoint)
        self._load = self._setpoint + (self._load - self._setpoint) * decay(120.0)
        self._motor = self.running + (self._motor - self.running) * decay(60.0)
        self._fluct = ou(self._fluct, 600.0, 1.0)
        self._ambient_walk = float(ou(self._ambient_walk, 6 * HOUR_S, 0.7))
        self._pressure = self._pressure_target() + (
            self._pressure - self._pressure_target()
        ) * decay(120.0)
        target = self._temp_target(ts)
        tau = np.where(target > self._temp, self._heat_tau_s, self._cool_tau_s)
        self._temp = target + (self._temp - target) * decay(tau)

    def _measure(self, ts: float) -> np.ndarray:
        activity = self._motor * np.clip(self._load + 0.08 * self._fluct, 0.0, None)
        true = {
            "temperature": self._temp,
            "vibration": 0.02 + self._vib * activity,
            "pressure": self._pressure,
            "current": 0.05 + self._motor * 0.15 * self._full_a + self._full_a * 0.85 * activity,
        }
        n = len(self.devices)
        noise = self._rng.standard_normal((n, len(METRICS)))
        values = np.empty((n, len(self.metrics)))
        for j, metric in enumerate(self.metrics):
            # Noise is drawn for every metric so a metric subset keeps the same random stream.
            k = METRICS.index(metric)
            sigma = _NOISE[metric]
            if metric != "temperature":
                # Electrical and mechanical noise is mostly there while the motor turns.
                sigma = sigma * (0.3 + 0.7 * self._motor)
            noisy = true[metric] + sigma * noise[:, k]
            values[:, j] = noisy if metric == "temperature" else np.maximum(noisy, 0.0)
        return values

    def step_arrays(self, ts: float) -> tuple[np.ndarray, np.ndarray]:
        """Advance to `ts` and return values ``(devices, metrics)`` and a per-device mask of
        the devices that report (False while silent). `ts` must not go backwards."""
        ts = float(ts)
        if self._last_ts is None:
            self._init_state(ts)
        elif ts < self._last_ts:
            raise ValueError(f"time went backwards: {ts} < {self._last_ts}")
        else:
            self._advance(ts, ts - self._last_ts)
        self._last_ts = ts
        self._start_faults(ts)
        values = self._measure(ts)
        present = np.ones(len(self.devices), dtype=bool)
        self._apply_faults(ts, values, present)
        return values, present

    def step(self, ts: float) -> list[tuple[str, str, float]]:
        """Advance to `ts` and return ``(device, metric, value)`` for every reporting series."""
        values, present = self.step_arrays(ts)
        return [
            (device, metric, float(values[d, m]))
            for d, device in enumerate(self.devices)
            if present[d]
            for m, metric in enumerate(self.metrics)
        ]


@dataclass
class History:
    """Readings in long format (parallel arrays, time-ordered) and the faults injected."""

    ts: np.ndarray
    device: np.ndarray
    metric: np.ndarray
    value: np.ndarray
    faults: list[Fault] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def readings(self) -> Iterator[Reading]:
        for ts, device, metric, value in zip(
            self.ts, self.device, self.metric, self.value, strict=True
        ):
            yield Reading(str(device), str(metric), float(ts), float(value))


def generate_history(
    config: FactoryConfig | None = None,
    *,
    start_ts: float = 1_704_326_400.0,
    duration_s: float | None = None,
    n_readings: int | None = None,
    faults: Sequence[FaultSpec] = (),
) -> History:
    """Run the factory from `start_ts` every `config.interval_s` and collect the readings.

    Give `duration_s` (readings at ``start_ts + k * interval_s < start_ts + duration_s``) or
    `n_readings` (exactly that many; the last tick may be partial). The default start is
    Thursday 2024-01-04 00:00 UTC, so a five-day history holds a weekend.

    >>> len(generate_history(FactoryConfig(n_devices=2), n_readings=100_000 // 1000))
    100
    """
    config = config or FactoryConfig()
    if (duration_s is None) == (n_readings is None):
        raise ValueError("give exactly one of duration_s and n_readings")
    sim = FactorySimulator(config, start_ts, faults)
    n_series = len(sim.devices) * len(sim.metrics)
    ticks = math.inf if duration_s is None else math.ceil(duration_s / config.interval_s)
    limit = n_readings if n_readings is not None else ticks * n_series
    ts_parts, idx_parts, value_parts = [], [], []
    grid = np.arange(n_series)
    total, k = 0, 0
    while k < ticks and total < limit:
        ts = start_ts + k * config.interval_s
        values, present = sim.step_arrays(ts)
        keep = np.repeat(present, len(sim.metrics))
        ts_parts.append(np.full(int(keep.sum()), ts))
        idx_parts.append(grid[keep])
        value_parts.append(values.reshape(-1)[keep])
        total += int(keep.sum())
        k += 1
    idx = np.concatenate(idx_parts)[:limit] if idx_parts else np.empty(0, dtype=int)
    devices, metrics = np.array(sim.devices), np.array(sim.metrics)
    return History(
        ts=np.concatenate(ts_parts)[:limit] if ts_parts else np.empty(0),
        device=devices[idx // len(sim.metrics)],
        metric=metrics[idx % len(sim.metrics)],
        value=np.concatenate(value_parts)[:limit] if value_parts else np.empty(0),
        faults=list(sim.truth),
    )
