"""``iotad eval factory``: the simulated factory benchmark (`training.factory_eval`).

Flags, running the (shape, seed) cases (in worker processes with ``--jobs``), the report.
Cheap to import: TensorFlow loads only where the LSTM trains.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from detector.sim.plant_config import SHAPES
from detector.worker.cli_flags import add_alias
from training.eval_cli import parse_overrides
from training.nab_run import _init_worker
from training.nab_run import mmss as _mmss

DEFAULT_OUT = Path("runs/factory")

FACTORY_EPILOG = """\
Per (shape, seed): simulate 14 days of fault-free history and 3 days of stream with 6 faults
of every kind, train (lstm: the training pipeline; naive: last value, no training), replay the
stream through the worker's core one timestamp at a time, match alerts to faults.

examples:
  iotad eval factory                                  # 3 seeds, lstm and naive side by side
  iotad eval factory --shape mixed --seeds 3,4 --forecaster naive
  iotad eval factory --quick --forecaster naive       # a small plant, one day (seconds)
"""


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a comma list of integers, not {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("want at least one seed")
    return seeds


def add_arguments(sub: Any) -> None:
    """The ``factory`` subcommand of ``iotad eval`` (`sub`: its subparsers)."""
    fac = sub.add_parser(
        "factory",
        help="the simulated factory benchmark with the worker's core",
        description="Train on a simulated plant's fault-free history, replay a labelled "
        "stream through the worker's detection core, report recall, precision, false alerts "
        "per series-day and delay per fault kind, and forecast RMSE against naive.",
        epilog=FACTORY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fac.add_argument(
        "--shape",
        dest="shapes",
        action="append",
        choices=list(SHAPES),
        help="fleet shape (repeatable; default 2shift-staggered, --quick: small)",
    )
    fac.add_argument("--seeds", type=_seed_list, help="comma list (default 0,1,2; --quick: 0)")
    forecaster = fac.add_argument(
        "--forecaster",
        choices=("both", "lstm", "naive"),
        default="both",
        help="both (default): lstm and naive side by side on the same data",
    )
    add_alias(fac, "--model", forecaster)  # its name until this release
    fac.add_argument("--quick", action="store_true", help="small plant, short run (for tests)")
    fac.add_argument("--history-days", type=float, help="fault-free training history (14)")
    fac.add_argument("--stream-days", type=float, help="labelled stream (3)")
    fac.add_argument("--faults-per-kind", type=int, help="faults of each kind per run (6)")
    fac.add_argument("--prime-days", type=float, help="history replayed before the stream (1)")
    fac.add_argument("--grace", type=int, help="readings after a fault an alert counts (5)")
    fac.add_argument("--out", type=Path, default=DEFAULT_OUT, help="(runs/factory)")
    fac.add_argument("--jobs", type=int, default=1, help="(shape, seed) cases in parallel (1)")
    fac.add_argument("--quiet", action="store_true", help="no progress lines")
    fac.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a TrainConfig field of the lstm training (repeatable)",
    )
    fac.add_argument(
        "--detection",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a DetectionConfig field of the core (repeatable)",
    )
    fac.add_argument(
        "--rules",
        type=Path,
        metavar="FILE",
        help="apply a rules file (docs/rules.md) in the core, as the worker does",
    )
    fac.set_defaults(_eval=main_factory)


def factory_config(args: argparse.Namespace) -> Any:
    """The `BenchConfig` the flags ask for (``--quick`` starts from `QUICK`)."""
    from detector.engine.detection_config import DetectionConfig
    from training.factory_eval import QUICK, BenchConfig

    base = QUICK if args.quick else BenchConfig()
    changes: dict[str, Any] = {
        "models": ("lstm", "naive") if args.forecaster == "both" else (args.forecaster,),
        "detection": replace(DetectionConfig(), **parse_overrides(args.detection, DetectionConfig)),
        "train_overrides": base.train_overrides | parse_overrides(args.train),
    }
    if args.shapes:
        changes["shapes"] = tuple(dict.fromkeys(args.shapes))
    if args.seeds:
        changes["seeds"] = args.seeds
    for name in ("history_days", "stream_days", "faults_per_kind", "prime_days", "grace"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if getattr(args, "rules", None) is not None:
        from detector.worker.rules_file import RulesError, load_rules

        try:
            load_rules(args.rules)  # checked here: one line per problem before any run
        except RulesError as exc:
            raise ValueError("\n".join(exc.lines)) from None
        changes["rules"] = args.rules
    cfg = replace(base, **changes)
    cfg.validate()
    return cfg


def run_factory_cases(cfg: Any, out: Path, jobs: int, quiet: bool) -> list[Any]:
    """Every (shape, seed) of `cfg`, `jobs` at a time; returns the runs in a stable order."""
    from training.factory_eval import evaluate_case

    cases = [(shape, seed) for shape in cfg.shapes for seed in cfg.seeds]
    started = time.monotonic()
    done: dict[tuple[str, int], list[Any]] = {}

    def note(case: tuple[str, int], runs: list[Any]) -> None:
        done[case] = runs
        if quiet:
            return
        for r in runs:
            state = f"FAILED {r.error}" if r.error else f"{len(r.alerts)} alerts"
            print(
                f"[{len(done)}/{len(cases)}] {_mmss(time.monotonic() - started)} "
                f"{r.shape} seed {r.seed} {r.model}: {state}",
                file=sys.stderr,
                flush=True,
            )

    if jobs <= 1:
        for case in cases:
            note(case, evaluate_case(*case, cfg, out))
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(evaluate_case, *c, cfg, out): c for c in cases}
            for future in as_completed(futures):
                note(futures[future], future.result())
    return [r for case in cases for r in done[case]]


def main_factory(args: argparse.Namespace) -> int:
    from training.factory_report import report_text, summarize, write_outputs

    try:
        cfg = factory_config(args)
    except ValueError as exc:
        print(f"iotad eval factory: {exc}", file=sys.stderr)
        return 2
    from training.extras import train_extra_problem

    problem = "lstm" in cfg.models and train_extra_problem(
        "iotad eval factory", alternative="--forecaster naive"
    )
    if problem:
        print(problem, file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = run_factory_cases(cfg, out, max(1, args.jobs), args.quiet)
    elapsed = time.monotonic() - started
    summary = summarize(results, cfg.kinds)
    summary["config"] = {
        "shapes": list(cfg.shapes),
        "seeds": list(cfg.seeds),
        "models": list(cfg.models),
        "history_days": cfg.history_days,
        "stream_days": cfg.stream_days,
        "faults_per_kind": cfg.faults_per_kind,
        "prime_days": cfg.prime_days,
        "grace_readings": cfg.grace,
        "interval_s": cfg.interval_s,
        "train_overrides": cfg.train_overrides,
        "detection": {f.name: getattr(cfg.detection, f.name) for f in fields(cfg.detection)},
        "rules": None if cfg.rules is None else str(cfg.rules),
        "elapsed_s": round(elapsed, 1),
    }
    write_outputs(out, summary, results)
    print(report_text(summary, cfg.kinds))
    print(f"\n{len(results)} runs in {_mmss(elapsed)}; wrote {out}/summary.json and CSVs")
    return 1 if summary["failed"] else 0
