"""A simulated factory: machines on production lines, their sensors, and injected faults.

Pure: numpy only, no I/O and no wall clock. `FactorySimulator.step(ts)` advances the plant to
`ts` (epoch seconds, any spacing) and returns one value per series; `generate_history` runs it
over a time range. The MQTT and CSV edges live in `detector.sim.simulate_cli`; when machines run
is `detector.sim.plant_schedule`, what faults do is `detector.sim.faults`.

The signal model, per machine: a shift schedule (one for the plant, or one per line) switches
it on and off, and so do random maintenance stops; a motor state follows, with a short lag or
a linear ramp of a few minutes; a load setpoint changes at shift starts and at random while
running, and drops to an idle level while the machine waits between jobs; a shared load
fluctuation moves current, vibration and pressure together; temperature follows ambient
(daily cycle plus slow weather) plus the heat of the running machine with first-order
heating/cooling lags. Faults use their own random streams, so a run with faults equals the
same run without them outside the declared fault intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.engine.readings import Reading
from detector.sim.faults import (
    ALL_METRICS,
    FAULT_KINDS,
    LEGACY_KINDS,
    NOISE,
    ActiveFault,
    Fault,
    FaultInjector,
    FaultSpec,
)
from detector.sim.plant_config import (
    IDLE_LOAD,
    MACHINE_KINDS,
    METRICS,
    FactoryConfig,
    device_names,
)
from detector.sim.plant_schedule import (
    DAY_S,
    HOUR_S,
    MONTH_S,
    SHIFT_SCHEDULES,
    EventCalendar,
    fleet_running,
    shift_running,
)

__all__ = [
    "ALL_METRICS",
    "DAY_S",
    "FAULT_KINDS",
    "HOUR_S",
    "LEGACY_KINDS",
    "METRICS",
    "SHIFT_SCHEDULES",
    "FactoryConfig",
    "FactorySimulator",
    "Fault",
    "FaultSpec",
    "History",
    "device_names",
    "generate_history",
    "shift_running",
]


def _machine_kind(device: str) -> str:
    """``line1-press01`` -> ``press``."""
    return device.split("-")[1].rstrip("0123456789")


class FactorySimulator:
    """Machines × metrics, stepped through time; pure and deterministic for a seed.

    `faults` are injected at ``start_ts + offset_s`` (more with `schedule`);
    `config.fault_rate_per_h` adds random ones (`detector.sim.faults.FaultInjector`). After each
    step, `truth` lists the faults that have started (in order) and `running` says which
    machines were on.

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
        self.schedules = config.schedules()
        seeds = np.random.SeedSequence(config.seed).spawn(6)
        # Separate streams: machine parameters, signal noise, fault schedule, fault noise,
        # maintenance stops, idle pauses; so adding faults never changes the clean signal.
        params, self._rng, fault_rng, fault_noise = map(np.random.default_rng, seeds[:4])
        n = config.n_devices
        kinds = np.array(
            [MACHINE_KINDS[name.split("-")[1].rstrip("0123456789")] for name in self.devices]
        )
        jitter = params.uniform(0.85, 1.15, size=(n, 4))
        self._rise, self._full_a, self._vib, self._bar = (kinds * jitter).T
        self._stagger_s = params.uniform(0, config.stagger_max_s, n)
        self._break_at_s = params.uniform(3.5, 4.5, n) * HOUR_S
        self._break_s = params.choice([0.0, 20 * 60, 30 * 60], n)  # some never pause
        self._heat_tau_s = params.uniform(15, 30, n) * 60
        self._cool_tau_s = self._heat_tau_s * params.uniform(1.5, 2.5, n)
        self._ambient_offset = params.normal(0.0, 1.0, n)
        # Drawn last, and only when asked for: plants without ramps keep their old parameters.
        self._ramp_s = params.uniform(*config.ramp_s, n) if config.ramp_s[1] > 0 else None
        self.maintenance = EventCalendar(
            n, config.maintenance_per_month / MONTH_S, *config.maintenance_s, seeds[4], start_ts
        )
        self.idling = EventCalendar(
            n, config.idle_per_day / DAY_S, *config.idle_s, seeds[5], start_ts
        )
        self.faults = FaultInjector(
            self.devices,
            self.metrics,
            config.interval_s,
            self.start_ts,
            self._full_a,
            fault_rng,
            fault_noise,
            config.fault_rate_per_h,
            config.fault_kinds,
        )
        self.faults.schedule(faults)
        self._last_ts: float | None = None
        self._dt = 0.0
        self.running = np.zeros(n, dtype=bool)

    # -- faults -----------------------------------------------------------------------------

    @property
    def truth(self) -> list[Fault]:
        """The faults that have started, in order."""
        return self.faults.truth

    def schedule(self, faults: Sequence[FaultSpec]) -> None:
        """Add faults (offsets from the simulation's start); their sizes are drawn now."""
        self.faults.schedule(faults)

    def _ghost_value(self, a: ActiveFault, ts: float) -> float:
        """What a decoupled sensor reads: the machine as it was before the fault began (its
        motor and load), with today's ambient, load fluctuation and sensor noise."""
        d, metric = a.d, self.metrics[a.m]
        if a.ghost is None:
            a.ghost = {
                "motor": float(self._prev_motor[d]),
                "load": float(self._prev_load[d]),
                "temp": float(self._temp[d]),
                "pressure": float(self._pressure[d]),
            }
        g = a.ghost
        motor, load, fluct = g["motor"], g["load"], float(self._fluct[d])
        dt = self._dt
        if dt > 0:  # the old state's own slow variables keep evolving
            target_p = 1.0 + motor * self._bar[d] * (0.7 + 0.3 * load + 0.05 * fluct)
            g["pressure"] = target_p + (g["pressure"] - target_p) * math.exp(-dt / 120.0)
            heat = motor * self._rise[d] * (0.5 + 0.5 * load)
            target_t = self._ambient(ts) + self._ambient_offset[d] + heat
            tau = self._heat_tau_s[d] if target_t > g["temp"] else self._cool_tau_s[d]
            g["temp"] = target_t + (g["temp"] - target_t) * math.exp(-dt / tau)
        activity = motor * max(load + 0.08 * fluct, 0.0)
        true = {
            "temperature": g["temp"],
            "vibration": 0.02 + self._vib[d] * activity,
            "pressure": g["pressure"],
            "current": 0.05 + motor * 0.15 * self._full_a[d] + self._full_a[d] * 0.85 * activity,
        }[metric]
        noise = self._noise[d, a.m]
        if metric == "temperature":
            return float(true + noise)
        # Electrical and mechanical noise is mostly there while the motor turns.
        noise *= (0.3 + 0.7 * motor) / (0.3 + 0.7 * float(self._motor[d]))
        return max(float(true + noise), 0.0)

    # -- signals ----------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The machines' operating state after the last step (copies): `running` (bool),
        `motor` (0 stopped .. 1 running), `setpoint` and `load` (0..1), `maintenance` and
        `idle` (bool)."""
        return {
            "running": self.running.copy(),
            "motor": np.array(self._motor, dtype=float),
            "setpoint": self._setpoint.copy(),
            "load": np.array(self._load, dtype=float),
            "maintenance": self._in_maintenance.copy(),
            "idle": self._idle.copy(),
        }

    def _init_state(self, ts: float) -> None:
        n = len(self.devices)
        self.running = self._running(ts)
        self._motor = self.running.astype(float)
        self._setpoint = self._rng.uniform(0.5, 1.0, n)
        self._load = self._load_target()
        self._prev_motor, self._prev_load = self._motor, self._load
        self._fluct = np.zeros(n)
        self._ambient_walk = 0.0
        self._pressure = self._pressure_target()
        self._temp = self._temp_target(ts)

    def _running(self, ts: float) -> np.ndarray:
        scheduled = fleet_running(
            ts, self.schedules, self._stagger_s, self._break_at_s, self._break_s
        )
        self._in_maintenance = self.maintenance.active(ts)
        self._idle = self.idling.active(ts)
        running: np.ndarray = scheduled & ~self._in_maintenance
        return running

    def _load_target(self) -> np.ndarray:
        load: np.ndarray = np.where(self._idle, IDLE_LOAD, self._setpoint)
        return load

    def _ambient(self, ts: float) -> float:
        # Warmest mid-afternoon, coolest before dawn, plus slow weather.
        return (
            21.0
            + 3.0 * math.sin(2 * math.pi * (ts % DAY_S - 9 * HOUR_S) / DAY_S)
            + (self._ambient_walk)
        )

    def _temp_target(self, ts: float) -> np.ndarray:
        heat = self._motor * self._rise * (0.5 + 0.5 * self._load)
        target: np.ndarray = self._ambient(ts) + self._ambient_offset + heat
        return target

    def _pressure_target(self) -> np.ndarray:
        swing = 0.7 + 0.3 * self._load + 0.05 * self._fluct
        target: np.ndarray = 1.0 + self._motor * self._bar * swing
        return target

    def _advance(self, ts: float, dt: float) -> None:
        rng, n = self._rng, len(self.devices)

        def decay(tau_s: float | np.ndarray) -> np.ndarray | float:
            return np.exp(-dt / tau_s)

        def ou(x: np.ndarray, tau_s: float, sigma: float) -> np.ndarray:
            # Exact Ornstein-Uhlenbeck step: the same statistics whatever the step size.
            a = math.exp(-dt / tau_s)
            step: np.ndarray = x * a + sigma * math.sqrt(1 - a * a) * rng.standard_normal(x.shape)
            return step

        self._prev_motor, self._prev_load = self._motor, self._load
        was_running = self.running
        self.running = self._running(ts)
        # New product at each start, and occasional setpoint changes while running.
        change = rng.random(n) < 1 - math.exp(-dt / (3 * HOUR_S))
        new_setpoint = rng.uniform(0.5, 1.0, n)
        change = (change & self.running) | (self.running & ~was_running)
        self._setpoint = np.where(change, new_setpoint, self._setpoint)
        target = self._load_target()
        self._load = target + (self._load - target) * decay(120.0)
        if self._ramp_s is None:
            self._motor = self.running + (self._motor - self.running) * decay(60.0)
        else:  # a linear ramp up or down, over the machine's own ramp time
            step = dt / self._ramp_s
            self._motor = self._motor + np.clip(self.running - self._motor, -step, step)
        self._fluct = ou(self._fluct, 600.0, 1.0)
        self._ambient_walk = float(ou(np.asarray(self._ambient_walk), 6 * HOUR_S, 0.7))
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
        self._noise = np.empty((n, len(self.metrics)))
        for j, metric in enumerate(self.metrics):
            # Noise is drawn for every metric so a metric subset keeps the same random stream.
            k = METRICS.index(metric)
            sigma: float | np.ndarray = NOISE[metric]
            if metric != "temperature":
                # Electrical and mechanical noise is mostly there while the motor turns.
                sigma = sigma * (0.3 + 0.7 * self._motor)
            self._noise[:, j] = sigma * noise[:, k]
            noisy = true[metric] + self._noise[:, j]
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
        self._dt = 0.0 if self._last_ts is None else ts - self._last_ts
        self._last_ts = ts
        self.faults.start(ts)
        values = self._measure(ts)
        present = np.ones(len(self.devices), dtype=bool)
        motor = np.asarray(self._motor, dtype=float)
        self.faults.apply(ts, values, present, motor, lambda a: self._ghost_value(a, ts))
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
