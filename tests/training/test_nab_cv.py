"""Cross-validated NAB: the fold split, choices made without the held-out files, the grid."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training import nab_grid
from training.nab import Corpus, CostMatrix
from training.nab_cv import Scorer, assign_folds, cross_validate, in_sample, out_of_fold

STEP_S = 300.0
STANDARD = CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)

# --- the fold split -------------------------------------------------------------------------

SIZES = (("art", 4), ("aws", 12), ("tw", 7), ("ad", 1))
NAMES = [f"{c}/{c}_{i}.csv" for c, n in SIZES for i in range(n)]


def test_every_file_is_in_exactly_one_fold_and_sizes_differ_by_at_most_one() -> None:
    folds = assign_folds(NAMES, 5)
    assert sorted(folds) == sorted(NAMES)
    assert set(folds.values()) == set(range(5))
    sizes = Counter(folds.values()).values()
    assert max(sizes) - min(sizes) <= 1


def test_the_split_is_deterministic_and_stratified_by_category() -> None:
    assert assign_folds(NAMES, 5) == assign_folds(list(reversed(NAMES)), 5)
    assert assign_folds(NAMES, 5, seed=1) != assign_folds(NAMES, 5)
    folds = assign_folds(NAMES, 5)
    # A category with at least k files is in every fold; one with fewer, in that many folds.
    aws = [f for n, f in folds.items() if n.startswith("aws/")]
    art = [f for n, f in folds.items() if n.startswith("art/")]
    assert set(aws) == set(range(5)) and len(set(art)) == 4


def test_the_split_refuses_too_few_files_or_folds() -> None:
    with pytest.raises(ValueError):
        assign_folds(NAMES, 1)
    with pytest.raises(ValueError):
        assign_folds(NAMES[:3], 5)


# --- choosing without the held-out files: a hand-worked case ---------------------------------
#
# Two 100-row files (probation 15 rows), one window each at rows 50-59, standard costs
# (tp 1, fp 0.11, fn 1). A detection on a window's first row earns 1; a missed window costs 1;
# a detection before any window costs 0.11.
#   variant P: a detects row 50 (score 0.9)       -> a: +1
#              b detects row 20 (0.9), not 50-59  -> b: -0.11 - 1 = -1.11 (or -1 above 0.9)
#   variant Q: a detects nothing                  -> a: -1
#              b detects row 50 (score 0.8)       -> b: +1
# Fold 0 holds a out: on b, Q (+1) beats P (-1 at best), so a is scored with Q: -1.
# Fold 1 holds b out: on a, P (+1) beats Q (-1), so b is scored with P at 0.9: -1.11.
# Out of fold: raw -2.11 against null -2 and perfect 2: 100 * -0.11 / 4 = -2.75.
# In sample, Q (a -1, b +1: 0) beats P (a +1, b -1.11: -0.11): 100 * 2 / 4 = 50.


def toy() -> tuple[Scorer, dict[str, dict[str, np.ndarray]]]:
    names = ("x/a.csv", "x/b.csv")
    corpus = Corpus(
        root=Path("."),
        names=names,
        windows={n: [(50 * STEP_S, 59 * STEP_S)] for n in names},
        labels={n: [] for n in names},
        profiles={"standard": STANDARD},
    )
    ts = np.arange(100) * STEP_S
    scorer = Scorer(corpus, {n: ts for n in names}, {"x/a.csv": 0, "x/b.csv": 1})
    p_a, p_b, q_a, q_b = (np.zeros(100) for _ in range(4))
    p_a[50], p_b[20], q_b[50] = 0.9, 0.9, 0.8
    return scorer, {"P": {"x/a.csv": p_a, "x/b.csv": p_b}, "Q": {"x/a.csv": q_a, "x/b.csv": q_b}}


def test_each_fold_is_scored_with_what_the_other_folds_chose() -> None:
    scorer, scores = toy()
    p = scorer.score_variant("P", 0.5, scores["P"])
    q = scorer.score_variant("Q", 0.5, scores["Q"])
    # The thresholds: each fold's is swept on the other fold's file only.
    assert p.profiles["standard"].fold_threshold == [1.1, 0.9]  # on b: detect nothing
    assert q.profiles["standard"].fold_threshold == [0.8, 1.1]  # on a: nothing to find
    for mode in ("swept", "fixed"):
        oof = out_of_fold([p, q], scorer.folds, scorer.bounds, "standard", mode)
        assert oof.chosen == ["Q", "P"]
        assert oof.per_file_raw == pytest.approx({"x/a.csv": -1.0, "x/b.csv": -1.11})
        assert oof.score == pytest.approx(-2.75)
        assert oof.windows_detected == 0 and oof.fp_rows == 1
        ins = in_sample([p, q], scorer.bounds, "standard", mode)
        assert ins.chosen == ["Q"] and ins.score == pytest.approx(50.0)
    swept = out_of_fold([p, q], scorer.folds, scorer.bounds, "standard", "swept")
    assert swept.thresholds == [0.8, 0.9]
    # The candidates' order only breaks ties; both orders give the same choice here.
    assert out_of_fold([q, p], scorer.folds, scorer.bounds, "standard", "swept") == swept


def test_a_single_candidate_only_chooses_the_threshold() -> None:
    scorer, scores = toy()
    p = scorer.score_variant("P", 0.5, scores["P"])
    result = cross_validate([p], scorer.folds, scorer.bounds)["standard"]
    # Swept: fold 0 learns "detect nothing" on b, so a's hit is lost out of fold (-1);
    # fold 1 learns 0.9 on a, so b gets its false positive and its miss (-1.11).
    assert result["swept"]["out_of_fold"].score == pytest.approx(-2.75)
    assert result["swept"]["in_sample"].score == pytest.approx(100 * (-0.11 + 2) / 4)
    # At the variant's own threshold there is nothing to choose: out of fold == in sample.
    assert result["fixed"]["out_of_fold"].score == result["fixed"]["in_sample"].score


def test_a_failed_file_counts_as_a_missed_window() -> None:
    scorer, scores = toy()
    failed = {"x/a.csv": np.zeros(100), "x/b.csv": scores["Q"]["x/b.csv"]}
    v = scorer.score_variant("Q", 0.5, failed)
    ins = in_sample([v], scorer.bounds, "standard", "fixed")
    assert ins.per_file_raw["x/a.csv"] == -1.0 and ins.score == pytest.approx(50.0)


# --- the grid -------------------------------------------------------------------------------


def test_variants_are_named_by_what_differs_from_the_defaults() -> None:
    assert nab_grid.DEFAULT.name == "default"
    v = nab_grid.variant(range_tolerance="off", flatline_min=0, seasonal=None)
    assert v.name == "flatline_min=0,range_tolerance=off,seasonal=off"
    assert v.detection.use_range is False and v.detection.flatline_min == 0
    assert v.min_autocorrelation is None
    assert nab_grid.variant(level_halflife="off").detection.use_level is False
    assert nab_grid.variant(threshold=0.5).name == "default"
    with pytest.raises(ValueError, match="not a tuned knob"):
        nab_grid.variant(error_clip=3.0)


def test_grids_put_the_defaults_first_and_hold_no_repeats() -> None:
    for knob in nab_grid.KNOBS:
        values = nab_grid.one_at_a_time(knob.name)
        assert values[0] == nab_grid.DEFAULT and len(values) == len(knob.values)
    full = nab_grid.full_grid()
    assert full[0] == nab_grid.DEFAULT
    assert len({(v.detection, v.min_autocorrelation) for v in full}) == len(full)
    assert len({v.name for v in full}) == len(full)
    assert nab_grid.simple() in full
