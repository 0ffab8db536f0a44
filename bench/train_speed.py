"""Benchmark `iotad train`: 100,000 readings of the simulated factory, the default model.

Prints wall time, peak memory, validation RMSE against the naive forecast, the LiteRT/Keras
difference, and the command that reproduces the run. Not a test: it prints figures.

    .venv/bin/python bench/train_speed.py                     # defaults
    .venv/bin/python bench/train_speed.py --readings 20000 -- --epochs 5 --max-windows 8000

Everything after ``--`` goes to ``iotad train`` unchanged. Training runs in a child process
(as a user runs it: TensorFlow import included) and its peak RSS is read from
``getrusage(RUSAGE_CHILDREN)`` once it has exited.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 60.0


def write_factory_csv(path: Path, n_readings: int, seed: int) -> str:
    """Write `n_readings` long-format readings to `path`; returns where they came from."""
    sys.path.insert(0, str(REPO))
    try:
        from detector.sim.simulate_cli import write_csv
        from examples.generate import example_config, generate_history
    except ImportError:
        _write_builtin_csv(path, n_readings, seed)
        return "built-in generator (examples/generate.py not importable)"
    history = generate_history(example_config(seed=seed), n_readings=n_readings)
    with path.open("w", encoding="utf-8", newline="") as handle:
        write_csv(history, handle)
    return "examples/generate.py (simulated factory, 6 machines x 4 metrics, 120 s steps)"


def _write_builtin_csv(path: Path, n_readings: int, seed: int) -> None:
    """Fallback: 8 sensors, a daily cycle plus noise, one reading a minute each."""
    rng = np.random.default_rng(seed)
    n_series = 8
    per_series = n_readings // n_series
    ts = 1_704_326_400 + 60 * np.arange(per_series)
    day = 2 * np.pi * (ts % 86_400) / 86_400
    with path.open("w", encoding="utf-8") as handle:
        handle.write("ts,device,metric,value\n")
        for k in range(n_series):
            values = 20 + 5 * np.sin(day + k) + rng.normal(0, 0.5, per_series)
            handle.writelines(
                f"{t},machine{k // 2},m{k % 2},{v:.4f}\n" for t, v in zip(ts, values, strict=True)
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7, help="data seed")
    parser.add_argument("--keep", type=Path, help="keep the CSV and artifact under this folder")
    parser.add_argument("train_args", nargs="*", help="after --: extra `iotad train` flags")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="iotad-bench-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    """Generate the data into `work`, train there, print the figures."""
    csv_path, out = work / "readings.csv", work / "model"
    t = time.perf_counter()
    source = write_factory_csv(csv_path, args.readings, args.seed)
    print(f"data: {args.readings} readings from {source} ({time.perf_counter() - t:.1f} s)")

    command = [sys.executable, "-m", "detector", "train", str(csv_path), "--out", str(out)]
    command += ["--quiet", *args.train_args]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - t
    # ru_maxrss is in KiB on Linux: the largest child that has exited, i.e. the training run.
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        print(f"training failed with exit status {proc.returncode}", file=sys.stderr)
        return 1
    report = json.loads((out / "report.json").read_text())
    m, tr = report["metrics"], report["training"]
    print(f"wall time: {wall_s:.1f} s (target < {TARGET_S:.0f} s on 2 cores)")
    print(f"  phases: {report['timing_s']}")
    print(f"peak RSS of the training process: {peak_mib:.0f} MiB")
    print(
        f"windows: {tr['train_windows']} training ({tr['windows_per_epoch']} sampled per epoch), "
        f"{tr['val_windows']} validation; {tr['series']} series; {tr['epochs_run']} epochs"
    )
    print(
        f"val RMSE {m['val_rmse_scaled']:.4f} vs naive {m['naive_rmse_scaled']:.4f} "
        f"(ratio {m['rmse_ratio_vs_naive']:.3f}, scaled units)"
    )
    print(f"LiteRT vs Keras max diff: {m['tflite_max_diff']:.2g}")
    reproduce = ["OPENBLAS_NUM_THREADS=1", ".venv/bin/python", "bench/train_speed.py"]
    reproduce += ["--readings", str(args.readings), "--seed", str(args.seed)]
    if args.train_args:
        reproduce += ["--", *args.train_args]
    print("reproduce: " + " ".join(shlex.quote(part) for part in reproduce))
    print("  which runs: " + " ".join(shlex.quote(part) for part in command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
