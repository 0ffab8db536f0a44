"""The factory benchmark's data: a fleet shape, a fault-free history, a labelled stream.

Pure (numpy and the simulator). For one (shape, seed): the plant runs for `history_days`
without faults (what the model trains on), then `stream_days` more with a planned set of
faults, evenly spread over every fault kind, never two at once on one device. The stream is
the continuation of the same simulation, so the history ends where the stream begins.

Where each kind may start (from a fault-free probe of the stream, so nothing is guessed):

- sensor faults (spike, level_shift, drift, stuck, noise_burst, silent): any time, in any
  regime (running, ramping, idle, stopped, in maintenance);
- oscillation and current_rise: while the machine runs at full speed throughout;
- decoupled: exactly when the machine changes state (starts, stops, or its load moves by
  `STATE_CHANGE_LOAD` or more), since a sensor stuck to the old state only shows then.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from detector.sim.faults import FAULT_KINDS, FAULT_SAMPLES, Fault, FaultSpec
from detector.sim.plant_config import DEFAULT_SHAPE, IDLE_LOAD, SHAPES, FleetShape
from detector.sim.simulation import DAY_S, FactorySimulator

__all__ = [
    "DEFAULT_SHAPE",
    "REGIMES",
    "SHAPES",
    "Block",
    "FleetShape",
    "Scenario",
    "alert_context",
    "build_scenario",
    "fault_regimes",
    "near_change_fraction",
    "plan_faults",
    "run_block",
]

STREAM_START_TS = 1_705_536_000.0
"""Thursday 2024-01-18 00:00 UTC: seed s's stream starts s days later (mod 7), so seeds see
other weekdays (0: Thu-Sat, 1: Fri-Sun, 2: Sat-Mon with 3 days); the history precedes it."""
STATE_CHANGE_LOAD = 0.2
"""A change of the machine's effective load (0 stopped .. 1 full) that counts as a change
of state for a decoupled fault."""
MIN_GAP_READINGS = 60
"""Readings kept clear between two faults of one device (matching stays unambiguous)."""


@dataclass
class Block:
    """Dense readings of a time range: ``values[t, d, m]``, ``present[t, d]`` (False while
    a device is silent), and per tick the machines' state from the simulator."""

    ts: np.ndarray
    values: np.ndarray
    present: np.ndarray
    running: np.ndarray
    load: np.ndarray
    """The machines' effective load: 0 when stopped, the idle level or the setpoint."""
    regime: np.ndarray | None = None
    """``[t, d]`` index into `REGIMES`: what the machine was doing."""

    def series(self, devices: tuple[str, ...], metrics: tuple[str, ...]) -> dict[str, tuple]:
        """``{"device/metric": (ts, values)}`` of the readings sent (silent ticks left out)."""
        out = {}
        for d, device in enumerate(devices):
            keep = self.present[:, d]
            for m, metric in enumerate(metrics):
                out[f"{device}/{metric}"] = (self.ts[keep], self.values[keep, d, m])
        return out


@dataclass
class Scenario:
    """One benchmark case: history to train on, the stream to detect in, its ground truth."""

    shape: FleetShape
    seed: int
    interval_s: float
    devices: tuple[str, ...]
    metrics: tuple[str, ...]
    history: Block
    stream: Block
    faults: list[Fault] = field(default_factory=list)

    @property
    def n_series(self) -> int:
        return len(self.devices) * len(self.metrics)

    @property
    def stream_days(self) -> float:
        return len(self.stream.ts) * self.interval_s / DAY_S


def run_block(sim: FactorySimulator, ts: np.ndarray) -> Block:
    """Step `sim` through `ts` and collect everything."""
    n, d, m = len(ts), len(sim.devices), len(sim.metrics)
    values, present = np.empty((n, d, m)), np.empty((n, d), dtype=bool)
    running, load = np.empty((n, d), dtype=bool), np.empty((n, d))
    regime = np.empty((n, d), dtype=np.int8)
    for i, t in enumerate(ts.tolist()):
        values[i], present[i] = sim.step_arrays(t)
        state = sim.state()
        running[i] = state["running"]
        effective = np.where(state["idle"], IDLE_LOAD, state["setpoint"])
        load[i] = np.where(state["running"], effective, 0.0)
        regime[i] = _regime(state)
    return Block(ts, values, present, running, load, regime)


REGIMES = ("running", "idle", "ramping", "stopped", "maintenance")
"""What a machine is doing at a tick (`Block.regime` indexes this)."""


def _regime(state: dict[str, np.ndarray]) -> np.ndarray:
    motor = state["motor"]
    out = np.where(state["idle"], 1, 0)
    out = np.where((motor > 0.001) & (motor < 0.999), 2, out)
    out = np.where(motor <= 0.001, 3, out)
    return np.where(state["maintenance"] & (motor < 0.999), 4, out).astype(np.int8)


def _state_changes(block: Block, d: int) -> np.ndarray:
    """Tick indices where machine `d` starts, stops or changes load by `STATE_CHANGE_LOAD`."""
    run = block.running[:, d]
    load = block.load[:, d]
    changed = (run[1:] != run[:-1]) | (np.abs(np.diff(load)) >= STATE_CHANGE_LOAD)
    return np.flatnonzero(changed) + 1


def _full_speed(probe: Block, d: int, lo: int, hi: int) -> bool:
    return bool(probe.running[lo:hi, d].all() and probe.running[max(0, lo - 15) : lo, d].all())


def plan_faults(
    probe: Block,
    devices: tuple[str, ...],
    metrics: tuple[str, ...],
    offset_s: float,
    interval_s: float,
    per_kind: int,
    seed: int,
    grace: int,
    kinds: tuple[str, ...] = FAULT_KINDS,
) -> list[FaultSpec]:
    """`per_kind` faults of each kind in the stream `probe` (a fault-free run of it).

    Offsets are from the simulation's start; the stream's first tick is `offset_s`. Every
    fault ends at least `grace` readings before the stream does, and faults of one device
    keep `MIN_GAP_READINGS` apart. Raises ValueError when the stream has no room.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xFA17]))
    n_ticks = len(probe.ts)
    first = 30  # leave the core a few readings after any gap in the record
    last = n_ticks - grace - 1
    busy: list[list[tuple[int, int]]] = [[] for _ in devices]
    specs: list[FaultSpec] = []

    def free(d: int, lo: int, hi: int) -> bool:
        return all(hi + MIN_GAP_READINGS <= a or lo >= b + MIN_GAP_READINGS for a, b in busy[d])

    order = [k for _ in range(per_kind) for k in kinds]
    for kind in order:
        for _attempt in range(5000):
            d = int(rng.integers(len(devices)))
            if kind == "spike":
                length = int(rng.integers(1, 4))
            else:
                length = max(2, round(FAULT_SAMPLES[kind] * rng.uniform(0.5, 1.5)))
            if kind == "decoupled":
                changes = _state_changes(probe, d)
                changes = changes[(changes >= first) & (changes + length <= last)]
                if changes.size == 0:
                    continue
                lo = int(rng.choice(changes))
            else:
                lo = int(rng.integers(first, max(first + 1, last - length)))
            hi = lo + length
            if hi > last or not free(d, lo, hi):
                continue
            if kind in ("oscillation", "current_rise") and not _full_speed(probe, d, lo, hi):
                continue
            if kind == "current_rise":
                metric = "current"
                if metric not in metrics:
                    raise ValueError("current_rise faults need the current metric")
            elif kind == "silent":
                metric = "*"
            else:
                metric = str(metrics[int(rng.integers(len(metrics)))])
            busy[d].append((lo, hi))
            start = offset_s + lo * interval_s
            specs.append(FaultSpec(devices[d], metric, kind, start, length * interval_s))
            break
        else:
            raise ValueError(f"no room for another {kind} fault in the stream")
    return sorted(specs, key=lambda s: s.offset_s)


def build_scenario(
    shape: FleetShape,
    seed: int,
    *,
    history_days: float = 14.0,
    stream_days: float = 3.0,
    faults_per_kind: int = 6,
    interval_s: float = 60.0,
    grace: int = 5,
    kinds: tuple[str, ...] = FAULT_KINDS,
) -> Scenario:
    """Simulate `shape` with `seed`: a clean history, then a stream with planned faults."""
    config = shape.config(seed, interval_s)
    n_hist = round(history_days * DAY_S / interval_s)
    n_stream = round(stream_days * DAY_S / interval_s)
    start = STREAM_START_TS + (seed % 7) * DAY_S - n_hist * interval_s
    sim = FactorySimulator(config, start)
    history = run_block(sim, start + interval_s * np.arange(n_hist))
    stream_ts = start + interval_s * np.arange(n_hist, n_hist + n_stream)
    probe = run_block(copy.deepcopy(sim), stream_ts)
    specs = plan_faults(
        probe,
        sim.devices,
        sim.metrics,
        n_hist * interval_s,
        interval_s,
        faults_per_kind,
        seed,
        grace,
        kinds,
    )
    sim.schedule(specs)
    stream = run_block(sim, stream_ts)
    faults = [f for f in sim.truth if f.start_ts >= stream_ts[0]]
    return Scenario(shape, seed, interval_s, sim.devices, sim.metrics, history, stream, faults)


NEAR_CHANGE_READINGS = 15
"""An alert this close to a start, stop or load change of its machine is "near a change"."""


def alert_context(scenario: Scenario, device: str, ts: float) -> str:
    """``near_change`` when the device's machine started, stopped or changed load within
    `NEAR_CHANGE_READINGS` of `ts`, else what it was doing (one of `REGIMES`)."""
    block = scenario.stream
    d = scenario.devices.index(device)
    t = min(int(np.searchsorted(block.ts, ts)), len(block.ts) - 1)
    changes = _state_changes(block, d)
    if changes.size and np.abs(changes - t).min() <= NEAR_CHANGE_READINGS:
        return "near_change"
    return REGIMES[int(block.regime[t, d])] if block.regime is not None else "unknown"


def near_change_fraction(scenario: Scenario) -> float:
    """The fraction of machine-time in the stream that is near a change (the base rate of
    `alert_context`'s ``near_change``)."""
    block = scenario.stream
    near = np.zeros(block.running.shape, dtype=bool)
    for d in range(len(scenario.devices)):
        for c in _state_changes(block, d).tolist():
            near[max(0, c - NEAR_CHANGE_READINGS) : c + NEAR_CHANGE_READINGS + 1, d] = True
    return float(near.mean())


def fault_regimes(scenario: Scenario) -> list[str]:
    """What each fault's machine was doing when the fault began (one of `REGIMES`)."""
    block = scenario.stream
    if block.regime is None:
        return ["unknown"] * len(scenario.faults)
    out = []
    for f in scenario.faults:
        t = min(int(np.searchsorted(block.ts, f.start_ts)), len(block.ts) - 1)
        out.append(REGIMES[int(block.regime[t, scenario.devices.index(f.device)])])
    return out
