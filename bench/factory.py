"""The factory benchmark: `iotad eval factory` with the figures the issue asks for.

Same code as the command (`training.eval_cli.main_factory`); this only sets the thread
variables the worker uses and passes every argument on:

    .venv/bin/python bench/factory.py                          # 3 seeds, lstm and naive
    .venv/bin/python bench/factory.py --shape mixed --seeds 0,1,2,3 --forecaster naive

Not a test: it prints figures (tables per kind and seed, pooled, against the targets) and
writes runs/factory/summary.json and CSVs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    from detector.cli import main as iotad

    return iotad(["eval", "factory", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
