"""``iotad eval nab`` and ``iotad eval factory``: detection quality with the worker's core.

``factory`` is the simulated factory benchmark (`training.factory_cli`). ``nab`` replays NAB
v1.1 through the worker's detection core and scores it: per file, the probationary rows train
a forecaster; every later row goes through `detector.engine.core.DetectionCore.process` in time
order. Writes ``<out>/<category>/<name>.csv`` (``timestamp,value,anomaly_score``), detail
CSVs, ``summary.json``; prints a table per profile at NAB's optimised threshold and at the
detector's fixed default threshold. A file that fails counts as no detections in every table
and is named.

``--compare-naive`` runs the naive forecast on the same files beside the model; ``--cv K``
cross-validates the tuned settings and NAB's threshold by file (`training.nab_cv_run`).

Cheap to import: TensorFlow loads only inside the worker processes that train.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from detector.worker.cli_flags import add_alias, deprecated_env

DEFAULT_OUT = Path("runs/nab")
NAB_ROOT_ENV = "NAB_ROOT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)
    nab = sub.add_parser(
        "nab",
        help="Numenta Anomaly Benchmark v1.1 with the worker's core",
        description="Replay NAB v1.1 through the worker's detection core: train a forecaster "
        "on each file's probationary rows, score the rest reading by reading, report NAB scores.",
    )
    nab.add_argument(
        "--nab-root",
        type=Path,
        default=None,
        help="NAB folder with data/, labels/, config/ (default: $NAB_ROOT or ../shared/nab)",
    )
    nab.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (runs/nab)")
    nab.add_argument(
        "--files",
        nargs="+",
        metavar="PATTERN",
        help="files to run: names or globs, e.g. 'realTweets/*' or Twitter_volume_AAPL",
    )
    nab.add_argument("--jobs", type=int, default=2, help="files in parallel processes (2)")
    nab.add_argument(
        "--plot", metavar="NAME", help="also draw this file into <out>/<category>/<name>.png"
    )
    nab.add_argument("--quiet", action="store_true", help="no progress line")
    forecaster = nab.add_argument(
        "--forecaster",
        choices=("lstm", "naive"),
        default="lstm",
        help="lstm: train with the pipeline; naive: last-value baseline, no training",
    )
    add_alias(nab, "--model", forecaster)  # its name until this release
    nab.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a TrainConfig field for the per-file training (repeatable)",
    )
    nab.add_argument(
        "--detection",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a DetectionConfig field of the core, e.g. threshold=0.6 (repeatable; the same "
        "bounds as IOTAD_DETECTION__*)",
    )
    nab.add_argument(
        "--compare-naive",
        action="store_true",
        help="also run --forecaster naive on the same files (into <out>/naive) and print both",
    )
    nab.add_argument(
        "--cv",
        type=int,
        default=0,
        metavar="K",
        help="K-fold cross-validation by file of the tuned settings and NAB's threshold; "
        "prints out-of-fold scores (the headline) beside in-sample ones, writes <out>/cv.json",
    )
    nab.add_argument(
        "--cv-grid",
        choices=("full", "small", "defaults"),
        default="full",
        help="candidates --cv chooses among: full (the tuned knobs, jointly and one at a "
        "time), small (signals off and the simple set), defaults (threshold only)",
    )
    nab.add_argument("--cv-seed", type=int, default=0, help="seed of the fold split (0)")
    nab.add_argument(
        "--reuse-models",
        action="store_true",
        help="load a file's model from an earlier run in <out>/models when it was trained "
        "on the same history with the same options, instead of training again",
    )
    nab.set_defaults(_eval=main_nab)
    from training.factory_cli import add_arguments as add_factory_arguments

    add_factory_arguments(sub)


def main(args: argparse.Namespace) -> int:
    return int(args._eval(args))


# --- inputs ---------------------------------------------------------------------------------


def find_nab_root(given: Path | None) -> Path:
    """The NAB folder: `given`, else $NAB_ROOT, ../shared/nab, or beside the checkout.

    ``IOTAD_NAB_ROOT`` is the variable's deprecated old name: it is no worker setting, and
    `iotad run` warned about it in every shell where it was set.
    """
    candidates = [given] if given else []
    if not given:
        env_root = deprecated_env(NAB_ROOT_ENV, "IOTAD_NAB_ROOT", prog="iotad eval nab")
        if env_root:
            candidates.append(Path(env_root))
        candidates.append(Path("../shared/nab"))
        candidates.append(Path(__file__).resolve().parents[2] / "shared" / "nab")
    for root in candidates:
        if (root / "labels" / "combined_windows.json").is_file():
            return root
    tried = ", ".join(str(c) for c in candidates)
    raise SystemExit(f"iotad eval nab: no NAB corpus found (tried {tried}); use --nab-root")


def select_files(names: tuple[str, ...], patterns: list[str] | None) -> list[str]:
    """Corpus names matching any pattern: full name, category glob or file stem, ``.csv``
    optional. A pattern that matches nothing is an error (a typo should not shrink a run)."""
    if not patterns:
        return list(names)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [
            n
            for n in names
            if any(
                fnmatch.fnmatchcase(candidate, p)
                for candidate in (n, n.split("/", 1)[1])
                for p in (pattern, f"{pattern}.csv")
            )
        ]
        if not hits:
            raise SystemExit(f"iotad eval nab: no NAB file matches {pattern!r}")
        chosen += [n for n in hits if n not in chosen]
    return sorted(chosen)


def detection_config(overrides: dict[str, Any]) -> Any:
    """The core's `DetectionConfig` with `overrides`, checked against the worker's bounds
    (`detector.config.settings.DETECTION_BOUNDS`): a threshold of 4 must not silently mean
    "never"."""
    from pydantic import TypeAdapter, ValidationError

    from detector.config.settings import DetectionSettings

    try:
        return TypeAdapter(DetectionSettings).validate_python(overrides)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SystemExit(f"iotad eval nab: --detection {where}: {err['msg']}") from None


def parse_overrides(pairs: list[str], cls: type | None = None) -> dict[str, Any]:
    """``["threshold=0.6", "units=[32]"]`` -> values decoded as JSON where they parse."""
    out: dict[str, Any] = {}
    known = {f.name for f in fields(cls)} if cls is not None else set()
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"iotad eval: expected KEY=VALUE, got {pair!r}")
        if cls is not None and key not in known:
            raise SystemExit(f"iotad eval: {cls.__name__} has no field {key!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


# --- the command ----------------------------------------------------------------------------


def compare_text(runs: dict[str, dict[str, Any]]) -> str:
    """The models' headline scores side by side (same files, same run)."""
    models = list(runs)
    lines = ["NAB score, same files, same run (optimised / fixed threshold):"]
    lines.append(f"  {'':<20}" + "".join(f"{m:>18}" for m in models))
    for profile in runs[models[0]]["optimised"]:
        cells = ""
        for m in models:
            a, b = runs[m]["optimised"][profile].score, runs[m]["fixed"][profile].score
            cells += f"{_score_text(a) + ' / ' + _score_text(b):>18}"
        lines.append(f"  {profile:<20}{cells}")
    return "\n".join(lines)


def _score_text(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def failed_text(runs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for model, r in runs.items():
        if r["failed"]:
            named = ", ".join(sorted(r["failed"]))
            parts.append(
                f"{model}: {len(r['failed'])} file(s) failed, scored as no detections: {named}"
            )
    return "\n".join(parts)


def main_nab(args: argparse.Namespace) -> int:
    from training.nab import load_corpus
    from training.nab_report import report_text

    models = [args.forecaster]
    if args.compare_naive and args.forecaster != "naive":
        models.append("naive")
    from training.extras import train_extra_problem

    needed = ("tensorflow",) if "lstm" in models else ()
    problem = train_extra_problem(
        "iotad eval nab",
        needed + (("matplotlib",) if args.plot else ()),
        "--forecaster naive" if needed else "",
    )
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if "lstm" in models and importlib.util.find_spec("training.pipeline") is None:
        print(
            "iotad eval nab: training/pipeline.py is not available; try --forecaster naive",
            file=sys.stderr,
        )
        return 2
    nab_root = find_nab_root(args.nab_root)
    corpus = load_corpus(nab_root)
    names = select_files(corpus.names, args.files)
    if args.cv and not 2 <= args.cv <= len(names):
        raise SystemExit(f"iotad eval nab: --cv needs 2..{len(names)} folds for these files")
    out: Path = args.out
    from training.nab_run import mmss, run_model

    runs = {m: run_model(args, corpus, names, m, out if i == 0 else out / m) for i, m in
            enumerate(models)}  # fmt: skip
    primary = runs[args.forecaster]
    print(report_text(primary["optimised"], primary["fixed"]))
    if len(runs) > 1:
        print("\n" + compare_text(runs))
    if failed_text(runs):
        print("\n" + failed_text(runs))
    elapsed = sum(r["elapsed"] for r in runs.values())
    print(
        f"\n{len(names)} files x {len(runs)} model(s) in {mmss(elapsed)}; wrote {out}/summary.json"
    )
    if args.cv:
        _cross_validate(args, corpus, names, runs)
    if args.plot:
        plot_name = select_files(corpus.names, [args.plot])[0]
        from training.nab_plot import plot_file
        from training.nab_replay import DEFAULT_NAB_THRESHOLD
        from training.nab_report import detail_csv_path

        thresholds = {"fixed (core threshold)": DEFAULT_NAB_THRESHOLD}
        thresholds["optimised (standard)"] = primary["optimised"]["standard"].threshold
        png = plot_file(
            detail_csv_path(out, plot_name),
            corpus,
            plot_name,
            out / Path(plot_name).with_suffix(".png"),
            thresholds,
        )
        print(f"plot: {png}")
    return 1 if any(r["failed"] for r in runs.values()) else 0


def _cross_validate(
    args: argparse.Namespace, corpus: Any, names: list[str], runs: dict[str, dict[str, Any]]
) -> None:
    from training.nab_cv_report import report_text as cv_text
    from training.nab_cv_report import write_cv_json
    from training.nab_cv_run import fitted_files, run_cv

    if args.detection:
        print("iotad eval nab: --cv varies the core's settings itself; --detection is the "
              "run's only", file=sys.stderr)  # fmt: skip
    cv_runs = {}
    for model, r in runs.items():
        files = fitted_files(corpus, names, r["out"], model, r["failed"])
        cv_runs[model] = run_cv(
            corpus, files, r["scores"], args.cv, args.cv_grid, args.cv_seed, args.jobs, args.quiet
        )
    print("\n" + cv_text(cv_runs))
    write_cv_json(args.out / "cv.json", cv_runs)
    print(f"\nwrote {args.out}/cv.json")
