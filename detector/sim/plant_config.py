"""What the simulated plant looks like: its machines, their sensors and their schedules.

`FactoryConfig` is read by `detector.sim.simulation.FactorySimulator`; it is re-exported there.
`SHAPES` are the named fleets of the factory benchmark (`iotad eval factory --shape`), which
`iotad simulate --shape` publishes too.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.sim.faults import FAULT_KINDS, LEGACY_KINDS
from detector.sim.plant_schedule import SHIFT_SCHEDULES

METRICS = ("temperature", "vibration", "pressure", "current")
IDLE_LOAD = 0.15
"""Load of a machine idling between jobs (motor turning, no work)."""
# Machine kinds: (temperature rise K, full-load current A, vibration mm/s, pressure bar).
MACHINE_KINDS = {
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
    `line_shifts`, when given, is a schedule per line (cycled), overriding `shifts`. Machines
    start up to `stagger_max_s` late (0: the whole plant at once). `ramp_s` is the range of
    the machines' linear start-up/shut-down times (0, 0: a first-order lag of one minute).
    Maintenance stops come at random, `maintenance_per_month` per machine, each lasting a
    uniform `maintenance_s`; idle pauses between jobs `idle_per_day` per machine, `idle_s`
    long. The defaults are the plant of the demo and the bundled examples.
    """

    n_devices: int = 6
    machines_per_line: int = 3
    metrics: tuple[str, ...] = METRICS
    shifts: str = "2"
    interval_s: float = 60.0
    seed: int = 0
    fault_rate_per_h: float = 0.0
    fault_kinds: tuple[str, ...] = LEGACY_KINDS
    line_shifts: tuple[str, ...] = ()
    stagger_max_s: float = 1200.0
    ramp_s: tuple[float, float] = (0.0, 0.0)
    maintenance_per_month: float = 0.0
    maintenance_s: tuple[float, float] = (1800.0, 14_400.0)
    idle_per_day: float = 0.0
    idle_s: tuple[float, float] = (300.0, 1800.0)

    def __post_init__(self) -> None:
        if self.n_devices < 1 or self.machines_per_line < 1:
            raise ValueError("need at least one device and one machine per line")
        if not self.metrics or set(self.metrics) - set(METRICS):
            raise ValueError(f"metrics must be a non-empty subset of {METRICS}")
        for shifts in (self.shifts, *self.line_shifts):
            if shifts not in SHIFT_SCHEDULES:
                raise ValueError(f"shifts must be one of {SHIFT_SCHEDULES}, not {shifts!r}")
        if self.interval_s <= 0 or self.fault_rate_per_h < 0:
            raise ValueError("interval_s must be > 0 and fault_rate_per_h >= 0")
        if not self.fault_kinds or set(self.fault_kinds) - set(FAULT_KINDS):
            raise ValueError(f"fault_kinds must be a non-empty subset of {FAULT_KINDS}")
        if self.stagger_max_s < 0 or self.maintenance_per_month < 0 or self.idle_per_day < 0:
            raise ValueError("stagger_max_s, maintenance_per_month, idle_per_day must be >= 0")
        for name in ("ramp_s", "maintenance_s", "idle_s"):
            low, high = getattr(self, name)
            if not 0 <= low <= high or (name != "ramp_s" and low <= 0):
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high")

    def schedules(self) -> tuple[str, ...]:
        """The shift schedule of each machine."""
        if not self.line_shifts:
            return (self.shifts,) * self.n_devices
        lines = [i // self.machines_per_line for i in range(self.n_devices)]
        return tuple(self.line_shifts[line % len(self.line_shifts)] for line in lines)


def device_names(n_devices: int, machines_per_line: int = 3) -> list[str]:
    """Names like ``line1-press01``: the line, the machine kind, its place on the line."""
    kinds = list(MACHINE_KINDS)
    names = []
    for i in range(n_devices):
        line, place = divmod(i, machines_per_line)
        names.append(f"line{line + 1}-{kinds[i % len(kinds)]}{place + 1:02d}")
    return names


@dataclass(frozen=True)
class FleetShape:
    """A plant layout and how it runs; `config(seed)` is the simulator's config."""

    name: str
    description: str
    n_devices: int
    machines_per_line: int
    shifts: str = "2"
    line_shifts: tuple[str, ...] = ()
    stagger_max_s: float = 0.0
    ramp_s: tuple[float, float] = (180.0, 900.0)
    maintenance_per_month: float = 3.0
    idle_per_day: float = 2.0

    def config(self, seed: int, interval_s: float = 60.0) -> FactoryConfig:
        return FactoryConfig(
            n_devices=self.n_devices,
            machines_per_line=self.machines_per_line,
            shifts=self.shifts,
            line_shifts=self.line_shifts,
            interval_s=interval_s,
            seed=seed,
            stagger_max_s=self.stagger_max_s,
            ramp_s=self.ramp_s,
            maintenance_per_month=self.maintenance_per_month,
            idle_per_day=self.idle_per_day,
        )


SHAPES = {
    s.name: s
    for s in (
        FleetShape(
            "2shift-staggered",
            "20 machines x 4 sensors, 5 lines, weekdays 06-22, starts staggered over 45 min",
            20,
            4,
            shifts="2",
            stagger_max_s=2700.0,
        ),
        FleetShape(
            "3shift-simultaneous",
            "12 machines x 4 sensors, 4 lines, Mon 06:00-Sat 06:00, all start at once",
            12,
            3,
            shifts="3",
            stagger_max_s=0.0,
        ),
        FleetShape(
            "mixed",
            "16 machines x 4 sensors, 4 lines on 24/7, 3, 2 and 1 shifts, 20 min stagger",
            16,
            4,
            line_shifts=("24/7", "3", "2", "1"),
            stagger_max_s=1200.0,
        ),
        FleetShape(
            "small",
            "6 machines x 4 sensors, 2 lines, weekdays 06-22, 20 min stagger (quick runs)",
            6,
            3,
            shifts="2",
            stagger_max_s=1200.0,
        ),
    )
}
DEFAULT_SHAPE = "2shift-staggered"
