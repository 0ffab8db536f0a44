"""``iotad eval nab --cv K``: the cross-validated NAB figures of one model's run.

After `iotad eval nab` has fitted every file and replayed it once (recording the LSTM's
forecasts), this replays all files under every candidate variant of `training.nab_grid`
(no model runs: `training.nab_multi`), scores each variant once (`training.nab_cv.Scorer`)
and cross-validates the procedures below. The defaults' replay here must give exactly the
scores of the run's own per-file replay; the report says by how much it differs (0).

Procedures (candidate lists; the first candidate wins ties):

* ``defaults``: the current defaults; only NAB's threshold is chosen;
* ``grid``: every variant of `nab_grid.full_grid` (the honest figure for "tune on NAB");
* ``simple``: every knob at its simple value; only the threshold is chosen;
* ``knob:<name>``: the defaults with that knob chosen among its values.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from training import nab_grid
from training.nab import Corpus, probation_rows
from training.nab_cv import Scorer, VariantScores, assign_folds, cross_validate
from training.nab_forecasts import ForecastTable
from training.nab_multi import FittedFile, MultiReplay, Variant

GRIDS = ("full", "small", "defaults")


def forecast_path(out: Path, name: str) -> Path:
    """Where a file's recorded forecasts are kept: ``<out>/forecasts/<name>.npz``."""
    return out / "forecasts" / Path(name).with_suffix(".npz")


def fitted_files(
    corpus: Corpus, names: list[str], out: Path, model: str, failed: dict[str, str]
) -> list[FittedFile]:
    """Every file of a finished run, ready to replay (failed ones carry their error)."""
    from detector.engine.artifact import load_artifact
    from training.nab_replay import naive_artifact, series_names

    files = []
    for name in names:
        ts, values = corpus.read_series(name)
        history = probation_rows(len(ts))
        if name in failed:
            files.append(FittedFile(name, ts, values, history, None, error=failed[name]))
            continue
        if model == "naive":
            key = "/".join(series_names(name))
            artifact = naive_artifact(key, values[:history], out)
            files.append(FittedFile(name, ts, values, history, artifact))
            continue
        artifact = load_artifact(out / "models" / Path(name).with_suffix(""))
        table = ForecastTable.load(forecast_path(out, name))
        files.append(FittedFile(name, ts, values, history, artifact, table))
    return files


def candidates(grid: str) -> list[Variant]:
    if grid == "full":
        return nab_grid.full_grid()
    if grid == "small":
        return nab_grid.small_grid()
    if grid == "defaults":
        return [nab_grid.DEFAULT]
    raise ValueError(f"grid must be one of {', '.join(GRIDS)}")


def procedures(variants: list[Variant]) -> dict[str, list[str]]:
    """Procedure name -> its candidates' names (only procedures the variants allow)."""
    have = {v.name for v in variants}
    out = {"defaults": [nab_grid.DEFAULT.name]}
    if len(have) > 1:
        out["grid"] = [v.name for v in variants]
    simple = nab_grid.simple().name
    if simple in have:
        out["simple"] = [simple]
    for knob in nab_grid.KNOBS:
        names = [v.name for v in nab_grid.one_at_a_time(knob.name)]
        if len(names) > 1 and all(n in have for n in names):
            out[f"knob:{knob.name}"] = names
        simple_alone = nab_grid.variant(**{knob.name: knob.simple}).name
        if simple_alone in have and simple_alone != nab_grid.DEFAULT.name:
            out[f"knob:{knob.name}=simple"] = [simple_alone]
    return out


# --- scoring the variants, in this process or in a few ---------------------------------------

_STATE: dict[str, Any] = {}


def _init(replay: MultiReplay, scorer: Scorer) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    _STATE["replay"], _STATE["scorer"] = replay, scorer


def _score_group(variants: list[Variant]) -> list[VariantScores]:
    replay, scorer = _STATE["replay"], _STATE["scorer"]
    scores = replay.scores(variants)
    return [scorer.score_variant(v.name, v.detection.threshold, scores[v.name]) for v in variants]


def score_variants(
    replay: MultiReplay, scorer: Scorer, variants: list[Variant], jobs: int, quiet: bool
) -> dict[str, VariantScores]:
    """`VariantScores` of every variant; variants sharing a core config replay together."""
    groups: dict[Any, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.detection, []).append(v)
    work = list(groups.values())
    out: dict[str, VariantScores] = {}
    started = time.monotonic()

    def progress(done: int) -> None:
        if not quiet:
            elapsed = time.monotonic() - started
            line = f"cv: {done}/{len(work)} core settings replayed, {elapsed:.0f} s"
            print(f"\r{line:<70}", end="\n" if done == len(work) else "", file=sys.stderr)

    if jobs <= 1:
        _init(replay, scorer)
        for i, group in enumerate(work):
            out.update({s.name: s for s in _score_group(group)})
            progress(i + 1)
        return out
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, ctx, initializer=_init, initargs=(replay, scorer)) as pool:
        for i, result in enumerate(pool.map(_score_group, work)):
            out.update({s.name: s for s in result})
            progress(i + 1)
    return out


def run_cv(
    corpus: Corpus,
    files: list[FittedFile],
    reference: dict[str, np.ndarray],
    k: int,
    grid: str,
    seed: int = 0,
    jobs: int = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Cross-validate one model's run; returns the report's data (see `nab_cv_report`).

    `reference` holds the run's own per-file anomaly scores (defaults), to check that the
    multi-file replay reproduces them.
    """
    names = [f.name for f in files]
    folds = assign_folds(names, k, seed)
    scorer = Scorer(corpus, {f.name: f.ts for f in files}, folds)
    replay = MultiReplay(files)
    variants = candidates(grid)
    check = replay.scores([nab_grid.DEFAULT])[nab_grid.DEFAULT.name]
    mismatch = max(
        (float(np.max(np.abs(check[n] - reference[n]), initial=0.0)) for n in reference),
        default=0.0,
    )
    started = time.monotonic()
    scored = score_variants(replay, scorer, variants, jobs, quiet)
    results = {
        name: cross_validate([scored[c] for c in members], folds, scorer.bounds)
        for name, members in procedures(variants).items()
    }
    return {
        "k": k,
        "seed": seed,
        "grid": grid,
        "folds": folds,
        "failed": replay.failed,
        "variants": [v.name for v in variants],
        "core_settings": len({v.detection for v in variants}),
        "replay_groups": len(replay.groups),
        "replay_check_max_abs_diff": mismatch,
        "elapsed_s": round(time.monotonic() - started, 1),
        "procedures": results,
        "scored": scored,
        "bounds": scorer.bounds,
    }
