"""``iotad eval nab`` and ``iotad eval factory``: detection quality with the worker's core.

``factory`` is the simulated factory benchmark (`training.factory_cli`). ``nab`` replays NAB
v1.1 through the worker's detection core and scores it: per file, the probationary rows train
a forecaster; every later row goes through `detector.core.DetectionCore.process` in time
order. Writes ``<out>/<category>/<name>.csv`` (``timestamp,value,anomaly_score``), detail
CSVs, ``summary.json``; prints a table per profile at NAB's optimised threshold and at the
detector's fixed default threshold.

Cheap to import: TensorFlow loads only inside the worker processes that train.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("runs/nab")


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
        help="NAB folder with data/, labels/, config/ (default: $IOTAD_NAB_ROOT or ../shared/nab)",
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
    nab.add_argument(
        "--model",
        choices=("lstm", "naive"),
        default="lstm",
        help="lstm: train with the pipeline; naive: last-value baseline, no training",
    )
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
    nab.set_defaults(_eval=main_nab)
    from training.factory_cli import add_arguments as add_factory_arguments

    add_factory_arguments(sub)


def main(args: argparse.Namespace) -> int:
    return int(args._eval(args))


# --- inputs ---------------------------------------------------------------------------------


def find_nab_root(given: Path | None) -> Path:
    """The NAB folder: `given`, else $IOTAD_NAB_ROOT, ../shared/nab, or beside the checkout."""
    candidates = [given] if given else []
    if not given:
        if os.environ.get("IOTAD_NAB_ROOT"):
            candidates.append(Path(os.environ["IOTAD_NAB_ROOT"]))
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
    (`detector.settings.DETECTION_BOUNDS`): a threshold of 4 must not silently mean "never"."""
    from pydantic import TypeAdapter, ValidationError

    from detector.settings import DetectionSettings

    try:
        return TypeAdapter(DetectionSettings).validate_python(overrides)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SystemExit(f"iotad eval nab: --detection {where}: {err['msg']}") from None


def parse_overrides(pairs: list[str], cls: type | None = None) -> dict[str, Any]:
    """``["threshold=0.6", "units=[32]"]`` -> values decoded as JSON where they parse."""
    out: dict[str, Any] = {}
    known = {f.name for f in fields(cls)} if cls is not None else None
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"iotad eval: expected KEY=VALUE, got {pair!r}")
        if known is not None and key not in known:
            raise SystemExit(f"iotad eval: {cls.__name__} has no field {key!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


# --- running files --------------------------------------------------------------------------


def _init_worker() -> None:
    """One thread per library in each worker process: the processes are the parallelism."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def evaluate_file(nab_root: Path, name: str, out: Path, cfg: Any) -> dict[str, Any]:
    """Replay one file and write its CSVs; returns its scores and facts (picklable)."""
    from training.nab import load_corpus, probation_rows
    from training.nab_replay import replay_file
    from training.nab_report import write_file_csvs

    corpus = load_corpus(nab_root)
    ts, values = corpus.read_series(name)
    work_dir = out / "models" / Path(name).with_suffix("")
    work_dir.mkdir(parents=True, exist_ok=True)
    replay = replay_file(name, ts, values, probation_rows(len(ts)), cfg, work_dir)
    write_file_csvs(out, replay)
    return {
        "name": name,
        "timestamps": replay.timestamps,
        "anomaly_score": replay.anomaly_score,
        "facts": {
            **replay.counts(),
            "fit_s": round(replay.fit_s, 3),
            "replay_s": round(replay.replay_s, 3),
            "model": replay.model_info,
        },
    }


class Progress:
    """One self-overwriting stderr line: files done, elapsed, a rough time left."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.done = total, quiet, 0
        self.started = time.monotonic()

    def step(self, name: str) -> None:
        self.done += 1
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        line = f"[{self.done:>3}/{self.total}] {_mmss(elapsed)} elapsed, "
        line += f"~{_mmss(left)} left  {name}"
        end = "\n" if self.done == self.total else ""
        print(f"\r{line[:110]:<110}", end=end, file=sys.stderr, flush=True)


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run_files(
    nab_root: Path, names: list[str], out: Path, cfg: Any, jobs: int, quiet: bool
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Evaluate `names`, `jobs` at a time in worker processes; returns results and failures."""
    # Longest files first, so no process is left with a big file at the end.
    order = sorted(names, key=lambda n: -(nab_root / "data" / n).stat().st_size)
    progress = Progress(len(order), quiet)
    results: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    if jobs <= 1:
        for name in order:
            try:
                results.append(evaluate_file(nab_root, name, out, cfg))
            except Exception as exc:  # one bad file must not lose the others' hours
                failed[name] = f"{type(exc).__name__}: {exc}"
            progress.step(name)
        return results, failed
    import multiprocessing

    # spawn: a fresh interpreter per worker, never a fork of a process holding threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker) as pool:
        futures = {pool.submit(evaluate_file, nab_root, n, out, cfg): n for n in order}
        for future in as_completed(futures):
            name = futures[future]
            try:
                results.append(future.result())
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
            progress.step(name)
    return results, failed


# --- the command ----------------------------------------------------------------------------


def main_nab(args: argparse.Namespace) -> int:
    from detector.core import DetectionConfig
    from training.nab import FileScores, load_corpus, score_profiles
    from training.nab_replay import DEFAULT_NAB_THRESHOLD, ReplayConfig
    from training.nab_report import report_text, write_summary

    if args.model == "lstm" and importlib.util.find_spec("training.pipeline") is None:
        print(
            "iotad eval nab: training/pipeline.py is not available; try --model naive",
            file=sys.stderr,
        )
        return 2
    nab_root = find_nab_root(args.nab_root)
    corpus = load_corpus(nab_root)
    names = select_files(corpus.names, args.files)
    detection = detection_config(parse_overrides(args.detection, DetectionConfig))
    cfg = ReplayConfig(
        model=args.model, train_overrides=parse_overrides(args.train), detection=detection
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results, failed = run_files(nab_root, names, out, cfg, max(1, args.jobs), args.quiet)
    elapsed = time.monotonic() - started
    for name, error in sorted(failed.items()):
        print(f"iotad eval nab: {name} failed: {error}", file=sys.stderr)
    if not results:
        return 1
    scores = {r["name"]: FileScores(r["timestamps"], r["anomaly_score"]) for r in results}
    optimised = score_profiles(corpus, scores)
    fixed = score_profiles(corpus, scores, DEFAULT_NAB_THRESHOLD)
    run = {
        "nab_root": str(nab_root),
        "files": len(results),
        "failed": failed,
        "elapsed_s": round(elapsed, 1),
        "jobs": args.jobs,
        "model": args.model,
        "train_overrides": cfg.train_overrides,
        "detection": {f.name: getattr(detection, f.name) for f in fields(detection)},
        "score_mapping": {
            "function": "training.nab_replay.nab_anomaly_score",
            "formula": "core score; inside an open episode min(score, 0.5 * threshold)",
            "default_threshold": DEFAULT_NAB_THRESHOLD,
        },
    }
    facts = {r["name"]: r["facts"] for r in results}
    write_summary(out / "summary.json", optimised, fixed, run, facts)
    print(report_text(optimised, fixed))
    print(f"\n{len(results)} files in {_mmss(elapsed)}; wrote {out}/summary.json")
    if args.plot:
        plot_name = select_files(corpus.names, [args.plot])[0]
        from training.nab_plot import plot_file
        from training.nab_report import detail_csv_path

        thresholds = {"fixed (core threshold)": DEFAULT_NAB_THRESHOLD}
        thresholds["optimised (standard)"] = optimised["standard"].threshold
        png = plot_file(
            detail_csv_path(out, plot_name),
            corpus,
            plot_name,
            out / Path(plot_name).with_suffix(".png"),
            thresholds,
        )
        print(f"plot: {png}")
    return 1 if failed else 0
