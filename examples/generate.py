"""Write the bundled example data set, `examples/factory.csv`, from the simulated factory.

Deterministic: the same arguments give the same bytes. Run ``python examples/generate.py``
(or ``make example-data``) to regenerate it; see ``examples/README.md``.

From Python, `generate_history` (re-exported from `detector.sim.simulation`) returns the readings
without writing anything, e.g. 100,000 readings for a benchmark::

    from examples.generate import example_config, generate_history
    history = generate_history(example_config(), n_readings=100_000)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.sim.simulate_cli import parse_ts, truth_document, write_csv
from detector.sim.simulation import FactoryConfig, generate_history

__all__ = ["example_config", "generate_history", "main"]

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "factory.csv"
# Thursday 2024-01-04 00:00 UTC: five days from here hold two working days, a weekend and a
# Monday, so both running and idle patterns are in the data.
DEFAULT_START = "2024-01-04T00:00:00+00:00"


def example_config(
    devices: int = 6, interval_s: float = 120.0, seed: int = 7, fault_rate_per_h: float = 0.0
) -> FactoryConfig:
    """The plant behind `factory.csv`: two shifts, four metrics per machine."""
    return FactoryConfig(
        n_devices=devices,
        interval_s=interval_s,
        seed=seed,
        shifts="2",
        fault_rate_per_h=fault_rate_per_h,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write")
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--days", type=float, default=5.0)
    parser.add_argument("--interval-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=parse_ts, default=parse_ts(DEFAULT_START))
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="random faults per simulated hour (0: clean training data)",
    )
    parser.add_argument("--truth", type=Path, help="also write the injected faults as JSON")
    args = parser.parse_args(argv)
    config = example_config(args.devices, args.interval_s, args.seed, args.fault_rate)
    history = generate_history(config, start_ts=args.start, duration_s=args.days * 86_400)
    with open(args.out, "w", encoding="utf-8", newline="") as fh:
        write_csv(history, fh)
    if args.truth:
        doc = truth_document(history.faults, config, args.start, float(history.ts[-1]))
        args.truth.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {len(history)} readings ({size_mb:.1f} MB) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
