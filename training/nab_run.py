"""Running NAB files for `iotad eval nab`: per-file fit and replay, in worker processes.

Per file, the probationary rows train a forecaster; every later row goes through
`detector.engine.core.DetectionCore.process` in time order (`training.nab_replay`). A file whose
fitting or replay fails never stops the others, and counts as no detections in the tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields
from pathlib import Path
from typing import Any


def _init_worker() -> None:
    """One thread per library in each worker process: the processes are the parallelism."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def evaluate_file(nab_root: Path, name: str, out: Path, cfg: Any) -> dict[str, Any]:
    """Replay one file and write its CSVs; returns its scores and facts (picklable).

    A trained model's forecasts are recorded to ``<out>/forecasts/`` for `--cv`.
    """
    from training.nab import load_corpus, probation_rows
    from training.nab_cv_run import forecast_path
    from training.nab_forecasts import RecordingForecaster
    from training.nab_replay import fit_forecaster, replay_fitted, series_names
    from training.nab_report import write_file_csvs

    corpus = load_corpus(nab_root)
    ts, values = corpus.read_series(name)
    work_dir = out / "models" / Path(name).with_suffix("")
    work_dir.mkdir(parents=True, exist_ok=True)
    history = probation_rows(len(ts))
    started = time.perf_counter()
    key = "/".join(series_names(name))
    artifact, forecaster, info = fit_forecaster(key, ts[:history], values[:history], cfg, work_dir)
    recorder = RecordingForecaster(forecaster) if cfg.model != "naive" else None
    replay = replay_fitted(name, ts, values, history, artifact, recorder or forecaster, cfg)
    replay.fit_s = time.perf_counter() - started - replay.replay_s
    replay.model_info = info
    if recorder is not None:
        recorder.table().save(forecast_path(out, name))
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
        line = f"[{self.done:>3}/{self.total}] {mmss(elapsed)} elapsed, "
        line += f"~{mmss(left)} left  {name}"
        end = "\n" if self.done == self.total else ""
        print(f"\r{line[:110]:<110}", end=end, file=sys.stderr, flush=True)


def mmss(seconds: float) -> str:
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


def run_model(
    args: argparse.Namespace, corpus: Any, names: list[str], model: str, out: Path
) -> dict[str, Any]:
    """Run one model over `names` into `out`: per-file replays, tables, ``summary.json``.

    A file whose fitting or replay failed counts as no detections (all scores 0) in every
    table, and is named in the summary's ``failed``.
    """
    import numpy as np

    from detector.engine.detection_config import DetectionConfig
    from training.eval_cli import detection_config, parse_overrides
    from training.nab import FileScores, score_profiles
    from training.nab_replay import DEFAULT_NAB_THRESHOLD, ReplayConfig
    from training.nab_report import write_summary

    # Checked against the worker's bounds: a threshold of 4 must not silently mean "never".
    detection = detection_config(parse_overrides(args.detection, DetectionConfig))
    cfg = ReplayConfig(
        model=model,
        train_overrides=parse_overrides(args.train) if model != "naive" else {},
        detection=detection,
        reuse_models=args.reuse_models,
    )
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results, failed = run_files(corpus.root, names, out, cfg, max(1, args.jobs), args.quiet)
    elapsed = time.monotonic() - started
    for name, error in sorted(failed.items()):
        print(f"iotad eval nab: {model}: {name} failed: {error}", file=sys.stderr)
    scores = {r["name"]: FileScores(r["timestamps"], r["anomaly_score"]) for r in results}
    for name in failed:
        ts, _ = corpus.read_series(name)
        scores[name] = FileScores(ts, np.zeros(len(ts)))
    optimised = score_profiles(corpus, scores)
    fixed = score_profiles(corpus, scores, DEFAULT_NAB_THRESHOLD)
    run = {
        "nab_root": str(corpus.root),
        "files": len(names),
        "failed": dict(sorted(failed.items())),
        "failed_scored_as": "no detections (every anomaly_score 0)",
        "elapsed_s": round(elapsed, 1),
        "jobs": args.jobs,
        "model": model,
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
    return {
        "out": out,
        "optimised": optimised,
        "fixed": fixed,
        "failed": failed,
        "elapsed": elapsed,
        "scores": {n: fs.scores for n, fs in scores.items()},
    }
