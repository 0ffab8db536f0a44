"""The simulated factory: schedule, determinism, and faults that do what the ground truth says.

Most fault tests run the same seed twice, with and without the fault: the fault's own random
stream is separate, so the difference between the runs is the fault alone.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.cli import main as cli_main
from detector.engine.readings import valid_name
from detector.sim.simulate_cli import parse_duration, parse_fault, parse_ts, write_csv
from detector.sim.simulation import (
    FAULT_KINDS,
    LEGACY_KINDS,
    METRICS,
    FactoryConfig,
    FactorySimulator,
    FaultSpec,
    device_names,
    generate_history,
    shift_running,
)

MONDAY = 1_704_067_200.0  # 2024-01-01 00:00 UTC, a Monday
TUESDAY_8H = MONDAY + 86_400 + 8 * 3_600
H = 3_600.0
DEVICE = "line1-mill02"


def run(
    faults: tuple[FaultSpec, ...] = (),
    *,
    n: int = 240,
    interval_s: float = 60.0,
    shifts: str = "24/7",
    seed: int = 3,
    start: float = TUESDAY_8H,
    rate: float = 0.0,
    kinds: tuple[str, ...] = LEGACY_KINDS,
) -> tuple[FactorySimulator, np.ndarray, np.ndarray, np.ndarray]:
    """Step a 3-machine plant `n` times: (sim, ts (n,), values (n, D, M), present (n, D))."""
    config = FactoryConfig(
        n_devices=3,
        interval_s=interval_s,
        shifts=shifts,
        seed=seed,
        fault_rate_per_h=rate,
        fault_kinds=kinds,
    )
    sim = FactorySimulator(config, start, faults)
    ts = start + interval_s * np.arange(n)
    steps = [sim.step_arrays(t) for t in ts]
    return sim, ts, np.array([v for v, _ in steps]), np.array([p for _, p in steps])


def col(sim: FactorySimulator, values: np.ndarray, device: str, metric: str) -> np.ndarray:
    return values[:, sim.devices.index(device), sim.metrics.index(metric)]


# -- plant --------------------------------------------------------------------------------


def test_names_are_valid_and_unique() -> None:
    names = device_names(40, machines_per_line=4)
    assert len(set(names)) == 40
    assert all(valid_name(n) for n in names)
    assert all(valid_name(m) for m in METRICS)
    assert names[:3] == ["line1-press01", "line1-mill02", "line1-pump03"]
    assert names[4].startswith("line2-") and names[4].endswith("01")


def test_same_seed_same_readings_other_seed_other_readings() -> None:
    _, _, a, _ = run(seed=11, n=50)
    _, _, b, _ = run(seed=11, n=50)
    _, _, c, _ = run(seed=12, n=50)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_step_returns_every_series_as_tuples() -> None:
    sim = FactorySimulator(FactoryConfig(n_devices=2, metrics=("current", "vibration")), MONDAY)
    rows = sim.step(MONDAY)
    assert [(d, m) for d, m, _ in rows] == [
        ("line1-press01", "current"),
        ("line1-press01", "vibration"),
        ("line1-mill02", "current"),
        ("line1-mill02", "vibration"),
    ]
    assert all(isinstance(v, float) for _, _, v in rows)
    with pytest.raises(ValueError, match="backwards"):
        sim.step(MONDAY - 1)


@pytest.mark.parametrize(
    ("shifts", "hour_of_week", "running"),
    [
        ("2", 5.99, False),  # Monday before 06:00
        ("2", 6.0, True),
        ("2", 21.99, True),
        ("2", 22.0, False),
        ("2", 24 + 3, False),  # Tuesday night
        ("2", 5 * 24 + 12, False),  # Saturday noon
        ("1", 13.99, True),
        ("1", 14.0, False),
        ("3", 5.99, False),  # Monday before the first shift
        ("3", 24 + 3, True),  # night shift
        ("3", 5 * 24 + 5.99, True),  # Saturday, end of Friday's night shift
        ("3", 5 * 24 + 6, False),
        ("3", 6 * 24 + 12, False),  # Sunday
        ("24/7", 6 * 24 + 12, True),
    ],
)
def test_shift_schedule_hours(shifts: str, hour_of_week: float, running: bool) -> None:
    zero = np.zeros(1)
    got = shift_running(MONDAY + hour_of_week * H, shifts, zero, zero, zero)
    assert got.tolist() == [running]


def test_shift_schedule_stagger_and_break() -> None:
    stagger, break_at, break_s = np.array([0.0, 600.0]), np.full(2, 4 * H), np.full(2, 1800.0)
    at = [6 * H + 300, 10 * H + 900, 10 * H + 1900]  # 06:05, 10:15, 10:31:40
    got = [shift_running(MONDAY + t, "2", stagger, break_at, break_s).tolist() for t in at]
    # The second machine starts 10 min late and so takes its break 10 min later too.
    assert got == [[True, False], [False, False], [True, False]]


def test_stopped_machine_draws_no_current_and_cools_down() -> None:
    # Monday 12:00 to Tuesday 12:00 with two shifts: running until ~22:00, then stopped.
    sim, ts, values, _ = run(shifts="2", start=MONDAY + 12 * H, n=24 * 60)
    hour = (ts - MONDAY) / H
    current = col(sim, values, DEVICE, "current")
    vibration = col(sim, values, DEVICE, "vibration")
    temperature = col(sim, values, DEVICE, "temperature")
    night = (hour >= 23) & (hour < 29)  # 23:00-05:00
    day = (hour >= 13) & (hour < 15)
    assert current[night].max() < 0.5 and vibration[night].max() < 0.1
    assert current[day].min() > 3.0 and vibration[day].mean() > 0.5
    # Cooling is gradual (a time constant, not a step) and ends near ambient.
    after_stop = temperature[(hour >= 22.5) & (hour < 26)]
    assert np.all(np.diff(after_stop[::10]) < 0.3)
    assert temperature[day].mean() - temperature[night][-60:].mean() > 10
    assert after_stop[0] - after_stop[-1] > 5


# -- faults -------------------------------------------------------------------------------


def with_and_without(spec: FaultSpec, **kw: object):
    clean = run(**kw)  # type: ignore[arg-type]
    faulty = run((spec,), **kw)  # type: ignore[arg-type]
    return clean, faulty


def test_spike_is_a_few_points_far_from_the_baseline() -> None:
    spec = FaultSpec(DEVICE, "temperature", "spike", 30 * 60.0, 3 * 60.0, 25.0)
    (sim, ts, clean, _), (fsim, _, faulty, _) = with_and_without(spec)
    diff = col(sim, faulty, DEVICE, "temperature") - col(sim, clean, DEVICE, "temperature")
    hit = np.flatnonzero(diff != 0)
    assert ts[hit].tolist() == [TUESDAY_8H + 1800 + k * 60 for k in range(3)]
    np.testing.assert_allclose(diff[hit], 25.0)
    (fault,) = fsim.truth
    assert (fault.kind, fault.device, fault.metric, fault.magnitude) == (
        "spike",
        DEVICE,
        "temperature",
        25.0,
    )
    assert (fault.start_ts, fault.end_ts) == (TUESDAY_8H + 1800, TUESDAY_8H + 1980)


def test_level_shift_moves_the_mean_during_the_fault_only() -> None:
    spec = FaultSpec(DEVICE, "pressure", "level_shift", 60 * 60.0, 60 * 60.0, -1.5)
    (sim, ts, clean, _), (_, _, faulty, _) = with_and_without(spec)
    during = (ts >= TUESDAY_8H + 3600) & (ts < TUESDAY_8H + 7200)
    diff = col(sim, faulty, DEVICE, "pressure") - col(sim, clean, DEVICE, "pressure")
    assert diff[during].mean() == pytest.approx(-1.5)
    np.testing.assert_array_equal(faulty[~during], clean[~during])


def test_drift_is_a_growing_offset() -> None:
    spec = FaultSpec(DEVICE, "vibration", "drift", 60 * 60.0, 100 * 60.0, 2.0)
    (sim, ts, clean, _), (_, _, faulty, _) = with_and_without(spec)
    diff = col(sim, faulty, DEVICE, "vibration") - col(sim, clean, DEVICE, "vibration")
    during = (ts >= TUESDAY_8H + 3600) & (ts < TUESDAY_8H + 3600 + 6000)
    # Offset = magnitude * elapsed / duration: 0 at the start, 0.02 a minute.
    np.testing.assert_allclose(diff[during], 2.0 * np.arange(100) / 100, atol=1e-9)
    assert not diff[~during].any()


def test_stuck_sensor_repeats_one_value() -> None:
    spec = FaultSpec(DEVICE, "current", "stuck", 20 * 60.0, 45 * 60.0)
    (sim, ts, clean, _), (fsim, _, faulty, _) = with_and_without(spec)
    during = (ts >= TUESDAY_8H + 1200) & (ts < TUESDAY_8H + 1200 + 2700)
    stuck = col(sim, faulty, DEVICE, "current")[during]
    assert during.sum() == 45 and len(set(stuck.tolist())) == 1
    assert len(set(col(sim, clean, DEVICE, "current")[during].tolist())) == 45
    assert fsim.truth[0].magnitude == 0.0


def test_silent_device_sends_nothing_during_the_fault() -> None:
    spec = FaultSpec(DEVICE, "*", "silent", 10 * 60.0, 30 * 60.0)
    sim, ts, _, present = run((spec,))
    d = sim.devices.index(DEVICE)
    during = (ts >= TUESDAY_8H + 600) & (ts < TUESDAY_8H + 2400)
    assert not present[during, d].any() and present[~during, d].all()
    assert present[:, [i for i in range(3) if i != d]].all()
    rows = FactorySimulator(sim.config, TUESDAY_8H, (spec,))
    rows.step(TUESDAY_8H)
    assert {dev for dev, _, _ in rows.step(TUESDAY_8H + 900)} == set(sim.devices) - {DEVICE}
    assert sim.truth[0].metric == "*"


def test_noise_burst_multiplies_the_noise() -> None:
    spec = FaultSpec(DEVICE, "temperature", "noise_burst", 60 * 60.0, 100 * 60.0, 10.0)
    (sim, ts, clean, _), (_, _, faulty, _) = with_and_without(spec)
    during = (ts >= TUESDAY_8H + 3600) & (ts < TUESDAY_8H + 9600)
    # First differences remove the slow signal and leave mostly noise.
    noisy = np.diff(col(sim, faulty, DEVICE, "temperature")[during]).std()
    calm = np.diff(col(sim, clean, DEVICE, "temperature")[during]).std()
    assert 5 < noisy / calm < 15
    assert not (faulty - clean)[~during].any()


def test_random_faults_change_readings_only_inside_their_ground_truth() -> None:
    _, ts, clean, present_clean = run(n=3000, shifts="2")
    sim, _, faulty, present = run(n=3000, shifts="2", rate=1.0, kinds=FAULT_KINDS)
    assert len(sim.truth) > 20 and {f.kind for f in sim.truth} == set(FAULT_KINDS)
    assert present_clean.all()
    explained = np.zeros(faulty.shape, dtype=bool)
    for f in sim.truth:
        d = sim.devices.index(f.device)
        during = (ts >= f.start_ts) & (ts < f.end_ts)
        m = slice(None) if f.kind == "silent" else sim.metrics.index(f.metric)
        explained[during, d, m] = True
        others = [o for o in sim.truth if o.device == f.device and o is not f]
        assert all(o.end_ts <= f.start_ts or o.start_ts >= f.end_ts for o in others)
    changed = (faulty != clean) | ~present[:, :, None]
    assert changed.any() and not (changed & ~explained).any()


def test_unknown_fault_targets_are_refused() -> None:
    config = FactoryConfig(n_devices=2)
    with pytest.raises(ValueError, match="unknown device"):
        FactorySimulator(config, MONDAY, [FaultSpec("line9-x01", "current", "spike", 0)])
    with pytest.raises(ValueError, match="unknown metric"):
        FactorySimulator(config, MONDAY, [FaultSpec("line1-press01", "rpm", "spike", 0)])


# -- history and CSV ----------------------------------------------------------------------


def test_history_by_duration_and_by_count() -> None:
    config = FactoryConfig(n_devices=2, interval_s=120.0, seed=5)
    h = generate_history(config, start_ts=MONDAY, duration_s=H)
    assert len(h) == 30 * 2 * 4 and h.ts[0] == MONDAY and h.ts[-1] == MONDAY + 29 * 120
    assert np.all(np.diff(h.ts) >= 0)
    assert len(generate_history(config, n_readings=1001)) == 1001
    first = next(h.readings())
    assert (first.device, first.metric, first.ts) == ("line1-press01", "temperature", MONDAY)


def test_csv_has_header_and_one_row_per_reading() -> None:
    config = FactoryConfig(n_devices=3, metrics=("temperature", "current"), interval_s=60.0)
    h = generate_history(config, start_ts=MONDAY, duration_s=600.0)
    out = io.StringIO()
    assert write_csv(h, out) == 60
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["ts", "device", "metric", "value"]
    assert len(rows) == 61
    assert rows[1][:3] == [str(int(MONDAY)), "line1-press01", "temperature"]
    assert all(
        float(r[3]) == pytest.approx(v, rel=1e-5) for r, v in zip(rows[1:], h.value, strict=True)
    )


# -- command-line parsing -----------------------------------------------------------------


def test_parse_fault_and_durations() -> None:
    assert parse_fault("line1-press01:current:spike@90") == FaultSpec(
        "line1-press01", "current", "spike", 90.0
    )
    assert parse_fault("line1-press01:temperature:drift@2h:30m:-4.5") == FaultSpec(
        "line1-press01", "temperature", "drift", 7200.0, 1800.0, -4.5
    )
    assert parse_duration("1.5d") == 129_600.0
    assert parse_ts("2024-01-01T00:00:00Z") == MONDAY == parse_ts("2024-01-01")
    for bad in ("line1-press01:current:melt@1", "nodevice@1", "a:b:spike@x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_fault(bad)


def test_docstring_examples_run() -> None:
    import doctest

    import detector.sim.simulation

    assert doctest.testmod(detector.sim.simulation).failed == 0


# -- examples/ ----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[3]


def test_bundled_example_matches_its_generator(tmp_path: Path) -> None:
    out = tmp_path / "factory.csv"
    cmd = [sys.executable, "examples/generate.py", "--out", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    bundled = REPO / "examples" / "factory.csv"
    assert bundled.stat().st_size < 4_000_000
    assert out.read_bytes() == bundled.read_bytes(), "regenerate: python examples/generate.py"


def test_readme_simulate_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "examples" / "README.md").read_text().replace("\\\n", " ")
    commands = [line.split() for line in text.splitlines() if line.startswith("iotad simulate")]
    commands = [c for c in commands if "--csv" in c]
    assert len(commands) == 2
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        assert cli_main(argv[1:]) == 0
    rows = list(csv.reader((tmp_path / "history.csv").open()))
    truth = json.loads((tmp_path / "faults.json").read_text())
    assert rows[0] == ["ts", "device", "metric", "value"] and truth["start_ts"] == MONDAY
    # 3 days of 2-minute ticks for 24 series, less 4 readings per tick a device was silent.
    ticks = MONDAY + 120 * np.arange(3 * 720)
    silent = [f for f in truth["faults"] if f["kind"] == "silent"]
    lost = sum(((ticks >= f["start_ts"]) & (ticks < f["end_ts"])).sum() for f in silent)
    assert truth["faults"] and len(rows) - 1 == 3 * 720 * 24 - 4 * lost
    one = list(csv.reader((tmp_path / "one.csv").open()))
    silent = [r for r in one[1:] if r[1] == "line2-oven01"]
    assert len(silent) == (1440 - 20) * 4  # 60-s default interval, 20 min missing


def test_simulate_shape_writes_the_benchmark_fleet(tmp_path: Path) -> None:
    out = tmp_path / "mixed.csv"
    argv = ["simulate", "--shape", "mixed", "--csv", str(out), "--days", "0.05", "--quiet"]
    assert cli_main([*argv, "--start", "2024-01-01"]) == 0
    rows = list(csv.reader(out.open()))[1:]
    devices = {r[1] for r in rows}
    assert len(devices) == 16 and "line4-oven04" in devices
    assert len(rows) == 72 * 16 * 4  # 0.05 days of minutes
