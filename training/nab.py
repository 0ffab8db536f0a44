"""NAB v1.1 scoring of a detector's anomaly scores: corpus loading, thresholds, breakdowns.

Pure numpy and the standard library (no TensorFlow, no pandas). Example::

    corpus = load_corpus(Path("../shared/nab"))
    scores = load_detector_scores(corpus.root / "results", "numenta", corpus)
    result = score_files(corpus, scores, "standard")  # threshold optimised over the corpus
    print(result.score, result.threshold)
    fixed = score_files(corpus, scores, "standard", threshold=0.5)

A file's scores are a `FileScores` (timestamps and one score per data row, in file order).
The numbers follow NAB v1.1 (see `training/nab_sweep.py` for the rules); the normalised score
is ``100 * (raw - null) / (perfect - null)`` where null never detects (every window costs
``fn_weight``) and perfect earns ``tp_weight`` per window.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.nab_sweep import (
    CostMatrix,
    PreparedFile,
    Tally,
    prepare_file,
    probation_rows,
    score_at,
    sweep,
)

__all__ = [
    "Corpus",
    "CostMatrix",
    "FileScores",
    "GroupScore",
    "Result",
    "load_corpus",
    "load_detector_scores",
    "probation_rows",
    "read_nab_csv",
    "score_files",
    "score_profiles",
]


@dataclass(frozen=True, slots=True)
class FileScores:
    """A detector's output for one data file: epoch-second timestamps and scores, row order."""

    timestamps: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True, slots=True)
class Corpus:
    """NAB labels: the scorable files, their windows (epoch seconds) and the profiles.

    `names` are data-relative paths such as ``"realTweets/Twitter_volume_AAPL.csv"``.
    """

    root: Path
    names: tuple[str, ...]
    windows: dict[str, list[tuple[float, float]]]
    labels: dict[str, list[float]]
    profiles: dict[str, CostMatrix]

    def data_path(self, name: str) -> Path:
        return self.root / "data" / name

    def read_series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A data file's ``(timestamps, values)``: epoch seconds and float64 values."""
        return read_nab_csv(self.data_path(name), "value")


def category_of(name: str) -> str:
    """``"realTweets/Twitter_volume_AAPL.csv"`` -> ``"realTweets"``."""
    return name.split("/", 1)[0]


def _epoch_s(stamps: list[str]) -> np.ndarray:
    """NAB timestamps (``2015-02-26 21:42:53[.000000]``, UTC) as float epoch seconds."""
    as_us = np.array(stamps, dtype="datetime64[us]").astype(np.int64)
    return as_us / 1e6


def read_nab_csv(path: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``timestamp`` and `column` of a NAB-style CSV as ``(epoch seconds, float64)``."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        try:
            t_col, v_col = header.index("timestamp"), header.index(column)
        except ValueError:
            raise ValueError(f"{path}: needs columns timestamp and {column}") from None
        rows = [(r[t_col], r[v_col]) for r in reader if r]
    stamps = [r[0] for r in rows]
    values = np.array([float(r[1]) for r in rows], dtype=np.float64)
    return _epoch_s(stamps), values


def load_corpus(nab_root: Path) -> Corpus:
    """Load NAB's windows, labels and profiles, keeping the labelled files that exist here."""
    root = Path(nab_root)
    with open(root / "labels" / "combined_windows.json", encoding="utf-8") as f:
        raw_windows: dict[str, list[list[str]]] = json.load(f)
    with open(root / "labels" / "combined_labels.json", encoding="utf-8") as f:
        raw_labels: dict[str, list[str]] = json.load(f)
    with open(root / "config" / "profiles.json", encoding="utf-8") as f:
        raw_profiles = json.load(f)
    names = tuple(sorted(n for n in raw_windows if (root / "data" / n).is_file()))
    windows = {}
    for name in names:
        pairs = sorted(raw_windows[name])
        starts = _epoch_s([p[0] for p in pairs]) if pairs else np.empty(0)
        ends = _epoch_s([p[1] for p in pairs]) if pairs else np.empty(0)
        windows[name] = [(float(s), float(e)) for s, e in zip(starts, ends, strict=True)]
    labels = {n: [float(t) for t in _epoch_s(raw_labels.get(n, []))] for n in names}
    profiles = {
        p: CostMatrix(
            tp_weight=float(m["CostMatrix"]["tpWeight"]),
            fp_weight=float(m["CostMatrix"]["fpWeight"]),
            fn_weight=float(m["CostMatrix"]["fnWeight"]),
        )
        for p, m in raw_profiles.items()
    }
    return Corpus(root, names, windows, labels, profiles)


def load_detector_scores(
    results_root: Path, detector: str, corpus: Corpus
) -> dict[str, FileScores]:
    """Read NAB result files ``<detector>/<category>/<detector>_<file>.csv`` for the corpus."""
    out = {}
    for name in corpus.names:
        category, file_name = name.split("/", 1)
        path = Path(results_root) / detector / category / f"{detector}_{file_name}"
        ts, scores = read_nab_csv(path, "anomaly_score")
        out[name] = FileScores(ts, scores)
    return out


def _window_rows(ts: np.ndarray, windows: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Row ranges ``(first, last)`` of windows, resolved as NAB's sweeper does.

    A few NAB files repeat a timestamp or step back in time, so rows are matched by equality,
    not by sorted search: a window opens at the first row (after the previous window) whose
    timestamp equals its start and closes at the first row equal to its end. A window whose
    ends match no row falls back to the rows between its start and end.
    """
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        after = rows[-1][1] + 1 if rows else 0
        starts = np.flatnonzero(ts[after:] == start)
        ends = np.flatnonzero(ts == end)
        if starts.size and ends.size:
            first, last = after + int(starts[0]), int(ends[0])
        else:
            inside = after + np.flatnonzero((ts[after:] >= start) & (ts[after:] <= end))
            if not inside.size:
                continue
            first, last = int(inside[0]), int(inside[-1])
        if first <= last:
            rows.append((first, last))
    return rows


def prepare(corpus: Corpus, scores: dict[str, FileScores]) -> list[PreparedFile]:
    """Resolve windows to rows and drop probation rows, once per set of scores."""
    prepared = []
    for name in sorted(scores):
        if name not in corpus.windows:
            raise KeyError(f"{name} is not a labelled NAB file")
        fs = scores[name]
        ts = np.asarray(fs.timestamps, dtype=np.float64)
        rows = _window_rows(ts, corpus.windows[name])
        prepared.append(prepare_file(name, len(ts), np.asarray(fs.scores), rows))
    return prepared


@dataclass(frozen=True, slots=True)
class GroupScore:
    """NAB score of a set of files (the corpus, a category or one file) at one threshold.

    `score` is normalised to [null=0, perfect=100]; None where there is no window to find
    (then ``perfect == null`` and only `raw`, zero or negative, says anything).
    """

    raw: float
    null: float
    perfect: float
    score: float | None
    tally: Tally


def _normalise(raw: float, null: float, perfect: float) -> float | None:
    return None if math.isclose(perfect, null) else 100.0 * (raw - null) / (perfect - null)


def _group(files: list[PreparedFile], tallies: list[Tally], cost: CostMatrix) -> GroupScore:
    raw = sum(t.raw for t in tallies)
    null = -cost.fn_weight * sum(f.n_windows for f in files)
    # NAB's perfect counts every labelled window, even one lost to probation.
    perfect = cost.tp_weight * sum(f.n_windows_total for f in files)
    total = Tally(
        raw=raw,
        **{
            k: sum(getattr(t, k) for t in tallies)
            for k in ("tp_rows", "fp_rows", "fn_rows", "tn_rows")
        },
        windows_detected=sum(t.windows_detected for t in tallies),
        windows_missed=sum(t.windows_missed for t in tallies),
    )
    return GroupScore(raw, null, perfect, _normalise(raw, null, perfect), total)


@dataclass(frozen=True, slots=True)
class Result:
    """A profile's NAB result over some files at one threshold, with its breakdowns."""

    profile: str
    threshold: float
    optimised: bool
    corpus: GroupScore
    per_category: dict[str, GroupScore] = field(default_factory=dict)
    per_file: dict[str, GroupScore] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """The normalised corpus score (NAB's headline number)."""
        return self.corpus.score


def score_prepared(
    prepared: list[PreparedFile], profile: str, cost: CostMatrix, threshold: float | None = None
) -> Result:
    """Score already prepared files (see `score_files`)."""
    optimised = threshold is None
    if threshold is None:
        swept = sweep(prepared, cost)
        threshold = float(swept.thresholds[swept.best()])
    tallies = [score_at(f, cost, threshold) for f in prepared]
    per_file = {f.name: _group([f], [t], cost) for f, t in zip(prepared, tallies, strict=True)}
    per_category = {}
    for category in sorted({category_of(f.name) for f in prepared}):
        members = [i for i, f in enumerate(prepared) if category_of(f.name) == category]
        per_category[category] = _group(
            [prepared[i] for i in members], [tallies[i] for i in members], cost
        )
    return Result(
        profile=profile,
        threshold=threshold,
        optimised=optimised,
        corpus=_group(prepared, tallies, cost),
        per_category=per_category,
        per_file=per_file,
    )


def score_files(
    corpus: Corpus,
    scores: dict[str, FileScores],
    profile: str,
    threshold: float | None = None,
) -> Result:
    """NAB-score a detector's `scores` (all rows of each listed file) under `profile`.

    With `threshold` None the threshold is NAB's: the one value for all the given files
    that maximises the raw score, found by sweeping every distinct score. Otherwise a row is
    a detection when its score >= `threshold` (what a user of a fixed threshold gets).
    """
    return score_prepared(prepare(corpus, scores), profile, corpus.profiles[profile], threshold)


def score_profiles(
    corpus: Corpus, scores: dict[str, FileScores], threshold: float | None = None
) -> dict[str, Result]:
    """`score_files` for every profile of the corpus, preparing the files only once."""
    prepared = prepare(corpus, scores)
    return {
        name: score_prepared(prepared, name, cost, threshold)
        for name, cost in corpus.profiles.items()
    }
