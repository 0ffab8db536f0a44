"""Cross-validated NAB scores: every choice made on the other folds' files only.

Files are split into k folds (`assign_folds`, stratified by category, deterministic). A
*procedure* chooses, from a list of candidate variants (`training.nab_multi.Variant`), one
variant and NAB's threshold per profile. For each fold the choice is made on the files of
the other folds, and the fold's files are scored with it; pooling the k held-out folds gives
the **out-of-fold** score of the procedure: what it earns on files it never looked at. The
**in-sample** score makes the same choice on all files and scores those same files.

Two ways to get a threshold are scored:

* ``swept``: NAB's, the threshold that maximises the raw score of the files chosen on;
* ``fixed``: the variant's own core threshold (what a user of the detector gets); only the
  variant is chosen.

`score_variant` reduces one variant's anomaly scores to the per-file tallies every choice
needs (`VariantScores`); `cross_validate` then chooses and pools without replaying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from training.nab import Corpus, _window_rows, category_of
from training.nab_sweep import CostMatrix, PreparedFile, Tally, prepare_file, score_at, sweep

MODES = ("swept", "fixed")


def assign_folds(names: Sequence[str], k: int, seed: int = 0) -> dict[str, int]:
    """File -> fold in ``0..k-1``: each category's files in a seeded order, dealt in turn.

    The deal continues from one category to the next, so every category spreads over the
    folds and fold sizes differ by at most one. The same names, k and seed give the same
    folds on any machine.
    """
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if len(set(names)) < k:
        raise ValueError(f"{len(set(names))} files cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        by_category.setdefault(category_of(name), []).append(name)
    folds: dict[str, int] = {}
    dealt = 0
    for category in sorted(by_category):
        members = by_category[category]
        for i in rng.permutation(len(members)).tolist():
            folds[members[i]] = dealt % k
            dealt += 1
    return folds


@dataclass(frozen=True, slots=True)
class FileTally:
    """One file's NAB result at one threshold: raw score and what was found."""

    raw: float
    windows_detected: int
    fp_rows: int

    @classmethod
    def of(cls, t: Tally) -> FileTally:
        return cls(t.raw, t.windows_detected, t.fp_rows)


@dataclass(frozen=True, slots=True)
class ProfileScores:
    """One variant under one profile: every tally a choice may need.

    `fixed` at the variant's own threshold; `insample` at the threshold swept over all
    files; per fold, the threshold swept over the other folds' files (`fold_threshold`),
    their raw score there (`fold_train_raw`) and each held-out file's tally (`heldout`).
    """

    fixed: dict[str, FileTally]
    insample_threshold: float
    insample: dict[str, FileTally]
    fold_threshold: list[float]
    fold_train_raw: list[float]
    heldout: dict[str, FileTally]


@dataclass(frozen=True, slots=True)
class VariantScores:
    name: str
    threshold: float
    profiles: dict[str, ProfileScores]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Per file, the raw score of a detector that finds nothing and of a perfect one."""

    null: dict[str, dict[str, float]]  # profile -> file -> raw
    perfect: dict[str, dict[str, float]]
    windows: dict[str, int]

    def normalise(self, profile: str, raw: dict[str, float]) -> float | None:
        """NAB's score of the files in `raw` (``100 (raw - null) / (perfect - null)``)."""
        null = sum(self.null[profile][n] for n in raw)
        perfect = sum(self.perfect[profile][n] for n in raw)
        if math.isclose(perfect, null):
            return None
        return 100.0 * (sum(raw.values()) - null) / (perfect - null)


class Scorer:
    """Turns anomaly scores into `VariantScores`, with the windows resolved once."""

    def __init__(
        self, corpus: Corpus, timestamps: dict[str, np.ndarray], folds: dict[str, int]
    ) -> None:
        self.corpus = corpus
        self.names = sorted(timestamps)
        self.folds = folds
        self.k = max(folds.values()) + 1
        self.rows = {n: _window_rows(timestamps[n], corpus.windows[n]) for n in self.names}
        self.n_rows = {n: len(timestamps[n]) for n in self.names}
        empty = [self.prepare(n, np.zeros(self.n_rows[n])) for n in self.names]
        null: dict[str, dict[str, float]] = {}
        perfect: dict[str, dict[str, float]] = {}
        for profile, cost in corpus.profiles.items():
            null[profile] = {f.name: -cost.fn_weight * f.n_windows for f in empty}
            perfect[profile] = {f.name: cost.tp_weight * f.n_windows_total for f in empty}
        self.bounds = Bounds(null, perfect, {f.name: f.n_windows for f in empty})

    def prepare(self, name: str, scores: np.ndarray) -> PreparedFile:
        return prepare_file(name, self.n_rows[name], scores, self.rows[name])

    def score_variant(
        self, name: str, threshold: float, scores: dict[str, np.ndarray]
    ) -> VariantScores:
        """Every tally of one variant, from its anomaly scores of every file."""
        prepared = [self.prepare(n, scores[n]) for n in self.names]
        profiles = {
            profile: self._profile(prepared, cost, threshold)
            for profile, cost in self.corpus.profiles.items()
        }
        return VariantScores(name, threshold, profiles)

    def _profile(
        self, prepared: list[PreparedFile], cost: CostMatrix, threshold: float
    ) -> ProfileScores:
        def best(files: list[PreparedFile]) -> tuple[float, float]:
            s = sweep(files, cost)
            i = s.best()
            return float(s.thresholds[i]), float(s.raw[i])

        def at(f: PreparedFile, t: float) -> FileTally:
            return FileTally.of(score_at(f, cost, t))

        in_t, _ = best(prepared)
        fold_t, fold_raw, heldout = [], [], {}
        for j in range(self.k):
            t, raw = best([f for f in prepared if self.folds[f.name] != j])
            fold_t.append(t)
            fold_raw.append(raw)
            heldout.update({f.name: at(f, t) for f in prepared if self.folds[f.name] == j})
        return ProfileScores(
            fixed={f.name: at(f, threshold) for f in prepared},
            insample_threshold=in_t,
            insample={f.name: at(f, in_t) for f in prepared},
            fold_threshold=fold_t,
            fold_train_raw=fold_raw,
            heldout=heldout,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """A procedure's score under one profile and mode, and what it chose."""

    score: float | None
    windows_detected: int
    fp_rows: int
    chosen: list[str]  # variant per fold (out-of-fold) or the one variant (in-sample)
    thresholds: list[float]
    per_file_raw: dict[str, float] = field(default_factory=dict)


def _train_raw(v: VariantScores, profile: str, mode: str, train: list[str], j: int) -> float:
    p = v.profiles[profile]
    if mode == "swept":
        return p.fold_train_raw[j]
    return sum(p.fixed[n].raw for n in train)


def _outcome(
    bounds: Bounds, tallies: dict[str, FileTally], chosen: list[str], thresholds: list[float],
    profile: str,
) -> Outcome:  # fmt: skip
    raw = {n: t.raw for n, t in tallies.items()}
    return Outcome(
        score=bounds.normalise(profile, raw),
        windows_detected=sum(t.windows_detected for t in tallies.values()),
        fp_rows=sum(t.fp_rows for t in tallies.values()),
        chosen=chosen,
        thresholds=thresholds,
        per_file_raw=raw,
    )


def out_of_fold(
    candidates: Sequence[VariantScores],
    folds: dict[str, int],
    bounds: Bounds,
    profile: str,
    mode: str,
) -> Outcome:
    """Per fold, the candidate (and threshold) best on the other folds, scored on the fold.

    Ties go to the earlier candidate: list the simpler or default one first.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    k = max(folds.values()) + 1
    tallies: dict[str, FileTally] = {}
    chosen, thresholds = [], []
    for j in range(k):
        train = [n for n, f in folds.items() if f != j]
        test = [n for n, f in folds.items() if f == j]
        pick = max(candidates, key=lambda v: _train_raw(v, profile, mode, train, j))
        p = pick.profiles[profile]
        source = p.heldout if mode == "swept" else p.fixed
        tallies.update({n: source[n] for n in test})
        chosen.append(pick.name)
        thresholds.append(p.fold_threshold[j] if mode == "swept" else pick.threshold)
    return _outcome(bounds, tallies, chosen, thresholds, profile)


def in_sample(
    candidates: Sequence[VariantScores], bounds: Bounds, profile: str, mode: str
) -> Outcome:
    """The candidate (and threshold) best on all files, scored on the same files."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")

    def source(v: VariantScores) -> dict[str, FileTally]:
        p = v.profiles[profile]
        return p.insample if mode == "swept" else p.fixed

    pick = max(candidates, key=lambda v: sum(t.raw for t in source(v).values()))
    p = pick.profiles[profile]
    threshold = p.insample_threshold if mode == "swept" else pick.threshold
    return _outcome(bounds, dict(source(pick)), [pick.name], [threshold], profile)


def cross_validate(
    candidates: Sequence[VariantScores], folds: dict[str, int], bounds: Bounds
) -> dict[str, dict[str, dict[str, Outcome]]]:
    """``[profile][mode]["out_of_fold" | "in_sample"]`` of a procedure's candidates."""
    profiles = candidates[0].profiles
    return {
        profile: {
            mode: {
                "out_of_fold": out_of_fold(candidates, folds, bounds, profile, mode),
                "in_sample": in_sample(candidates, bounds, profile, mode),
            }
            for mode in MODES
        }
        for profile in profiles
    }
