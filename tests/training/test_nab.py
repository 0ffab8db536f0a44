"""NAB v1.1 scorer: hand-worked cases on tiny files, and the published detectors' numbers."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from training.nab import (
    Corpus,
    CostMatrix,
    FileScores,
    load_corpus,
    load_detector_scores,
    probation_rows,
    score_files,
    score_profiles,
)
from training.nab_sweep import prepare_file, score_at, sweep

STEP_S = 300.0
STANDARD = CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
LOW_FN = CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)


def nab_curve(x: float) -> float:
    """NAB's scaled sigmoid written independently: 2*sigmoid(-5x) - 1 == tanh(-2.5x)."""
    return -1.0 if x > 3 else math.tanh(-2.5 * x)


def tiny_corpus(windows: dict[str, list[tuple[int, int]]]) -> Corpus:
    """A corpus of 100-row files (probation 15 rows) with windows given as row ranges."""
    return Corpus(
        root=Path("."),
        names=tuple(sorted(windows)),
        windows={n: [(a * STEP_S, b * STEP_S) for a, b in w] for n, w in windows.items()},
        labels={n: [] for n in windows},
        profiles={"standard": STANDARD, "reward_low_FN_rate": LOW_FN},
    )


def detections(rows: list[int], n: int = 100) -> FileScores:
    scores = np.zeros(n)
    scores[rows] = 1.0
    return FileScores(np.arange(n) * STEP_S, scores)


ONE_WINDOW = {"cat/a.csv": [(50, 59)]}  # width 10


def raw_at_half(rows: list[int], windows=ONE_WINDOW, profile: str = "standard") -> float:
    corpus = tiny_corpus(windows)
    return score_files(corpus, {"cat/a.csv": detections(rows)}, profile, 0.5).corpus.raw


def test_probation_is_15_percent_at_most_750_rows() -> None:
    assert probation_rows(100) == 15
    assert probation_rows(4032) == 604  # 604.8 rounds down
    assert probation_rows(5000) == 750
    assert probation_rows(22695) == 750


def test_detection_at_window_start_earns_tp_weight() -> None:
    assert raw_at_half([50]) == pytest.approx(1.0)


def test_detection_at_window_end_earns_little() -> None:
    # Last row: relative position -(59 - 59 + 1) / 10 = -0.1, scaled so the start earns 1.
    assert raw_at_half([59]) == pytest.approx(nab_curve(-0.1) / nab_curve(-1.0))


def test_only_first_detection_in_a_window_counts() -> None:
    expected = nab_curve(-(59 - 55 + 1) / 10) / nab_curve(-1.0)
    assert raw_at_half([55, 58]) == pytest.approx(expected)
    assert raw_at_half([55, 56, 57, 58, 59]) == pytest.approx(expected)


def test_missed_window_costs_fn_weight() -> None:
    assert raw_at_half([]) == pytest.approx(-1.0)
    assert raw_at_half([], profile="reward_low_FN_rate") == pytest.approx(-2.0)


def test_false_positive_before_any_window_costs_full_fp_weight() -> None:
    assert raw_at_half([20, 50]) == pytest.approx(1.0 - 0.11)


def test_false_positive_after_a_window_costs_by_distance() -> None:
    # Row 61 is 2 rows past the window's end; NAB divides by width - 1 = 9.
    assert raw_at_half([50, 61]) == pytest.approx(1.0 + 0.11 * nab_curve(2 / 9))
    # Far away (more than three widths past the end) costs the full weight.
    assert raw_at_half([50, 95]) == pytest.approx(1.0 - 0.11)


def test_probation_rows_are_not_scored() -> None:
    assert raw_at_half([3, 10, 14]) == pytest.approx(-1.0)


def test_window_starting_in_probation_is_scored_from_first_scorable_row() -> None:
    windows = {"cat/a.csv": [(10, 30)]}  # width 21, rows 10..14 are probation
    expected = nab_curve(-(30 - 15 + 1) / 21) / nab_curve(-1.0)
    assert raw_at_half([12, 15], windows) == pytest.approx(expected)


def test_null_and_perfect_detectors_normalise_to_0_and_100() -> None:
    corpus = tiny_corpus({"cat/a.csv": [(50, 59)], "cat/b.csv": [(30, 34), (70, 79)]})
    null = {n: detections([]) for n in corpus.names}
    perfect = {"cat/a.csv": detections([50]), "cat/b.csv": detections([30, 70])}
    for profile in corpus.profiles:
        for threshold in (None, 0.5):
            assert score_files(corpus, null, profile, threshold).score == pytest.approx(0.0)
            assert score_files(corpus, perfect, profile, threshold).score == pytest.approx(100.0)


def test_optimised_threshold_is_the_best_distinct_score() -> None:
    corpus = tiny_corpus(ONE_WINDOW)
    scores = np.zeros(100)
    scores[[20, 30, 40]] = 0.9  # three false positives
    scores[50] = 0.6  # the window's start
    result = score_files(
        corpus, {"cat/a.csv": FileScores(np.arange(100) * STEP_S, scores)}, "standard"
    )
    assert result.optimised
    # At 0.6 the TP (+1) outweighs three full FPs (-0.33) and the null (-1).
    assert result.threshold == pytest.approx(0.6)
    assert result.corpus.raw == pytest.approx(1.0 - 3 * 0.11)
    assert result.corpus.tally.windows_detected == 1
    assert result.corpus.tally.fp_rows == 3


def test_breakdowns_per_category_and_file() -> None:
    corpus = tiny_corpus({"x/a.csv": [(50, 59)], "y/b.csv": [(50, 59)], "y/c.csv": []})
    scores = {"x/a.csv": detections([50]), "y/b.csv": detections([]), "y/c.csv": detections([20])}
    result = score_files(corpus, scores, "standard", 0.5)
    assert result.per_category["x"].score == pytest.approx(100.0)
    # y: one missed window (-1) and one full FP (-0.11); null -1, perfect +1.
    assert result.per_category["y"].raw == pytest.approx(-1.11)
    assert result.per_category["y"].score == pytest.approx(100 * (-1.11 + 1) / 2)
    assert result.per_file["y/c.csv"].score is None  # no window: nothing to normalise by
    assert result.per_file["y/c.csv"].raw == pytest.approx(-0.11)
    assert result.corpus.raw == pytest.approx(1.0 - 1.0 - 0.11)


def test_repeated_timestamps_resolve_windows_by_first_match() -> None:
    ts = np.arange(100) * STEP_S
    ts[40] = ts[39]  # a duplicated row before the window, as in some NAB files
    corpus = tiny_corpus(ONE_WINDOW)
    scores = np.zeros(100)
    scores[50] = 1.0
    result = score_files(corpus, {"cat/a.csv": FileScores(ts, scores)}, "standard", 0.5)
    assert result.corpus.raw == pytest.approx(1.0)


def test_sweep_matches_fixed_threshold_scoring_everywhere() -> None:
    rng = np.random.default_rng(7)
    files = []
    for i, n in enumerate((300, 5000)):
        scores = np.round(rng.random(n), 2)  # plenty of ties
        files.append(
            prepare_file(f"c/{i}.csv", n, scores, [(n // 3, n // 3 + 20), (n - 40, n - 1)])
        )
    swept = sweep(files, LOW_FN)
    for k in range(0, len(swept.thresholds), 7):
        direct = [score_at(f, LOW_FN, float(swept.thresholds[k])) for f in files]
        assert swept.raw[k] == pytest.approx(sum(t.raw for t in direct), abs=1e-9)
        assert swept.tp_rows[k] == sum(t.tp_rows for t in direct)
        assert swept.fp_rows[k] == sum(t.fp_rows for t in direct)
        assert swept.windows_detected[k] == sum(t.windows_detected for t in direct)


# --- the NAB corpus and the two published detectors -----------------------------------------


def nab_root() -> Path | None:
    env = os.environ.get("NAB_ROOT") or os.environ.get("IOTAD_NAB_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "nab"
    return root if (root / "labels" / "combined_windows.json").is_file() else None


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    root = nab_root()
    if root is None:
        pytest.skip("NAB corpus not found: set NAB_ROOT or put it at ../shared/nab")
    if not (root / "results" / "numenta").is_dir():
        pytest.skip(f"NAB reference results missing under {root / 'results'}")
    return load_corpus(root)


PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


@pytest.mark.parametrize(
    ("detector", "threshold", "expected"),
    [
        ("numenta", None, (69.166, 61.393, 73.537)),
        ("numenta", 0.5, (68.073, 58.014, 73.230)),
        ("windowedGaussian", None, (38.493, 20.743, 46.037)),
    ],
)
def test_reference_detectors_reproduce_published_numbers(
    corpus: Corpus, detector: str, threshold: float | None, expected: tuple[float, ...]
) -> None:
    assert len(corpus.names) == 41
    scores = load_detector_scores(corpus.root / "results", detector, corpus)
    results = score_profiles(corpus, scores, threshold)
    for profile, want in zip(PROFILES, expected, strict=True):
        assert results[profile].score == pytest.approx(want, abs=0.01), profile
    if detector == "numenta" and threshold is None:
        for profile in PROFILES:
            assert results[profile].threshold == pytest.approx(0.54445, abs=1e-5)
