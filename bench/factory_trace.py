"""What the core saw, reading by reading, in one scenario of an `iotad eval factory` run.

A diagnostic, not a benchmark: it replays one (shape, seed) of a finished run with that
run's trained artifact, through the same `DetectionCore.process` calls as the benchmark, and
prints for one series around a time each reading's value, expected value, sigma, score and
every signal's deviation before its divisor (`detector.engine.signals.SIGNALS`). Faults
marked with ``*``. It is how docs/detection.md's "Where the tails come from" and the missed
vibration oscillations were read.

    .venv/bin/python bench/factory_trace.py runs/factory 2shift-staggered 1 \\
        line3-pump01/vibration 2024-01-19T14:36 --before 20 --after 50

The time is UTC, ISO 8601, or seconds since the epoch. The run must have been made with the
default benchmark settings (`BenchConfig()`): the scenario is rebuilt from shape and seed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    from detector.sim.simulate_cli import parse_ts

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an `iotad eval factory --out` directory")
    parser.add_argument("shape")
    parser.add_argument("seed", type=int)
    parser.add_argument("series", help="device/metric")
    parser.add_argument("at", type=parse_ts, help="UTC time (ISO 8601) or epoch seconds")
    parser.add_argument("--before", type=int, default=20, help="readings before (20)")
    parser.add_argument("--after", type=int, default=50, help="readings after (50)")
    args = parser.parse_args(argv)

    import numpy as np

    from detector.engine.artifact import load_artifact
    from detector.engine.core import DetectionCore
    from detector.engine.forecaster import LiteRTForecaster
    from detector.engine.signals import SIGNALS
    from training.factory_eval import BenchConfig, batches, case_dir, prime_ticks

    scenario = BenchConfig().scenario(args.shape, args.seed)
    model_dir = case_dir(args.run, args.shape, args.seed) / "lstm"
    if not (model_dir / "artifact.json").is_file():
        print(f"no trained artifact in {model_dir}", file=sys.stderr)
        return 2
    artifact = load_artifact(model_dir)
    core = DetectionCore(artifact, LiteRTForecaster.from_artifact(artifact, num_threads=1))
    core.scorer.record_parts = True
    step = scenario.interval_s
    start, end = args.at - args.before * step, args.at + args.after * step
    device, _, metric = args.series.partition("/")
    # The series' own faults, and its device's dropouts (metric "*").
    faults = [f for f in scenario.faults if f.device == device and f.metric in (metric, "*")]
    print("divisors", {k: round(v, 2) for k, v in (artifact.alert_signal_scales or {}).items()})
    signals = " ".join(f"{n[:7]:>7}" for n in SIGNALS)
    print(f"{'t':>5} {'value':>9} {'expected':>9} {'sigma':>7} {'score':>5} | {signals}")
    for _, _, ts, readings in batches(scenario, prime_ticks(scenario, 1.0)):
        if ts > end:
            break
        if not readings:
            continue
        core.trace = [] if ts >= start else None
        result = core.process(readings, now=ts)
        if ts < start:
            continue
        slot = core.store.slot(args.series)
        parts = {}
        for slots, stamps, *columns in core.trace or []:
            for i in np.flatnonzero(slots == slot):
                parts[float(stamps[i])] = columns[-1][i]
        for s in result.scored:
            if s.reading.key != args.series:
                continue
            in_fault = any(f.start_ts <= ts < f.end_ts for f in faults)
            row = parts.get(ts)
            shown = " ".join(f"{x:7.2f}" for x in row) if row is not None else ""
            print(
                f"{'*' if in_fault else ' '}{(ts - args.at) / step:4.0f} {s.reading.value:9.3f} "
                f"{s.expected:9.3f} {(s.upper - s.lower) / 6:7.3f} {s.score:5.2f} | {shown}"
            )
    for f in faults:
        print(f"fault {f.kind} on {f.device}/{f.metric} from {f.start_ts:.0f} to {f.end_ts:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
