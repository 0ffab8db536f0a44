"""`iotad eval nab`: causal replay through the real core, output files, tables and summary."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from training import eval_cli
from training.nab import Corpus, CostMatrix, FileScores, score_profiles
from training.nab_replay import (
    DEFAULT_NAB_THRESHOLD,
    PROBATION,
    SCORED,
    ReplayConfig,
    fit_forecaster,
    nab_anomaly_score,
    replay_file,
    replay_fitted,
)
from training.nab_report import (
    detail_csv_path,
    nab_csv_path,
    read_detail_csv,
    report_text,
    write_file_csvs,
    write_summary,
)

STEP_S = 300.0
NAIVE = ReplayConfig(model="naive", chunk_rows=64)


def series(n: int = 1500, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A daily-ish wave with noise and a few spikes, 5-minute steps."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 1, n)
    values[[k for k in (700, 1100, 1301) if k < n]] += 25
    return 1.4e9 + i * STEP_S, values


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


# --- the score mapping ----------------------------------------------------------------------


def test_score_mapping_reports_onsets_and_damps_the_rest_of_an_episode() -> None:
    s = np.array([0.0, 0.3, 0.9, 0.8, np.nan, 0.7])
    anomalous = np.array([False, False, True, True, False, True])
    onset = np.array([False, False, True, False, False, True])
    # In an open episode (row 3) the score drops to half the threshold; unscored rows are 0.
    assert nab_anomaly_score(s, anomalous, onset, 0.5) == pytest.approx(
        [0.0, 0.3, 0.9, 0.25, 0.0, 0.7]
    )
    assert DEFAULT_NAB_THRESHOLD == 0.5


# --- causality ------------------------------------------------------------------------------


def test_prefix_replays_exactly_like_the_whole_file(tmp_path: Path) -> None:
    ts, values = series()
    history = 225
    whole = replay_file("cat/f.csv", ts, values, history, NAIVE, tmp_path)
    for m in (history + 1, 777, 1000, 1234):  # on and off chunk boundaries
        prefix = replay_file("cat/f.csv", ts[:m], values[:m], history, NAIVE, tmp_path)
        assert same(prefix.anomaly_score, whole.anomaly_score[:m]), m
        assert same(prefix.core_score, whole.core_score[:m]), m
        assert same(prefix.status, whole.status[:m]), m


def test_future_values_do_not_change_past_scores(tmp_path: Path) -> None:
    ts, values = series()
    wild = values.copy()
    wild[900:] = wild[900:] * 1000 - 5e6  # a different future, far outside the past's range
    a = replay_file("cat/f.csv", ts, values, 225, NAIVE, tmp_path)
    b = replay_file("cat/f.csv", ts, wild, 225, NAIVE, tmp_path)
    assert same(a.anomaly_score[:900], b.anomaly_score[:900])
    assert not same(a.anomaly_score[900:], b.anomaly_score[900:])


def test_probation_rows_score_zero_and_scores_are_in_unit_interval(tmp_path: Path) -> None:
    ts, values = series()
    r = replay_file("cat/f.csv", ts, values, 225, NAIVE, tmp_path)
    assert np.all(r.status[:225] == PROBATION)
    assert np.all(r.anomaly_score[:225] == 0.0)
    assert np.all(r.status[225:] == SCORED)  # the naive window is primed from history
    assert np.all((r.anomaly_score >= 0) & (r.anomaly_score <= 1))
    # The first injected spike leaves the range seen so far: an anomaly in the core's terms.
    # The later ones, no larger, only raise the score (the long-run error distribution has
    # learnt from the first: the likelihood's trade-off, measured on NAB).
    assert r.is_anomaly[700] and r.anomaly_score[700] == 1.0
    assert np.all(r.anomaly_score[[1100, 1301]] > np.median(r.anomaly_score[225:]))


def test_repeated_timestamps_are_dropped_not_misaligned(tmp_path: Path) -> None:
    ts, values = series(600)
    ts[400] = ts[399]  # NAB has a few of these
    r = replay_file("cat/f.csv", ts, values, 90, NAIVE, tmp_path)
    assert r.anomaly_score.shape == (600,)
    assert r.counts()["dropped_rows"] == 1
    assert r.anomaly_score[400] == 0.0 and r.status[401] == SCORED


# --- output files ---------------------------------------------------------------------------


def test_csvs_keep_every_row_in_input_order(tmp_path: Path) -> None:
    ts, values = series(500)
    r = replay_file("realX/some_file.csv", ts, values, 75, NAIVE, tmp_path / "m")
    write_file_csvs(tmp_path, r)
    with open(nab_csv_path(tmp_path, "realX/some_file.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == 501
    assert rows[1][0] == "2014-05-13 16:53:20"  # 1.4e9 s, UTC
    parsed = np.array([r[0] for r in rows[1:]], dtype="datetime64[s]").astype(np.int64)
    assert np.array_equal(parsed, ts.astype(np.int64))
    assert np.array_equal([float(r[1]) for r in rows[1:]], values)
    assert np.array_equal([float(r[2]) for r in rows[1:]], r.anomaly_score)
    detail = read_detail_csv(detail_csv_path(tmp_path, "realX/some_file.csv"))
    assert same(detail["core_score"], r.core_score)
    assert np.array_equal(detail["status"], r.status)


# --- tables and summary ---------------------------------------------------------------------


def two_category_results() -> tuple[dict, dict]:
    corpus = Corpus(
        root=Path("."),
        names=("x/a.csv", "y/b.csv"),
        windows={"x/a.csv": [(50 * STEP_S, 59 * STEP_S)], "y/b.csv": []},
        labels={"x/a.csv": [], "y/b.csv": []},
        profiles={"standard": CostMatrix(1.0, 0.11, 1.0)},
    )
    a, b = np.zeros(100), np.zeros(100)
    a[50], b[30] = 0.9, 0.7
    ts = np.arange(100) * STEP_S
    scores = {"x/a.csv": FileScores(ts, a), "y/b.csv": FileScores(ts, b)}
    return score_profiles(corpus, scores), score_profiles(corpus, scores, 0.5)


def test_summary_json_holds_both_thresholds_and_breakdowns(tmp_path: Path) -> None:
    optimised, fixed = two_category_results()
    write_summary(tmp_path / "s.json", optimised, fixed, {"model": "naive"}, {"x/a.csv": {}})
    doc = json.loads((tmp_path / "s.json").read_text())
    std = doc["profiles"]["standard"]
    assert std["optimised"]["threshold"] == pytest.approx(0.9)
    assert std["optimised"]["score"] == pytest.approx(100.0)
    assert std["fixed"]["threshold"] == 0.5
    # At 0.5 the y file's row 30 is a full false positive: 1 - 0.11 over null -1, perfect 1.
    assert std["fixed"]["score"] == pytest.approx(100 * (0.89 + 1) / 2)
    assert std["fixed"]["per_category"]["y"]["score"] is None
    assert std["fixed"]["per_category"]["y"]["raw"] == pytest.approx(-0.11)
    assert std["fixed"]["per_file"]["x/a.csv"]["windows_detected"] == 1
    assert doc["run"] == {"model": "naive"}


def test_report_table_lists_categories_and_both_scores() -> None:
    optimised, fixed = two_category_results()
    text = report_text(optimised, fixed)
    assert "standard: optimised threshold 0.9 | fixed threshold 0.5" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line[:1].isalpha()}
    assert "100.00" in lines["x"] and "1/1" in lines["x"]
    assert "(-0.11)" in lines["y"]  # no window: the raw FP cost instead of a score
    assert "94.50" in lines["all"]


def test_select_files_by_name_stem_and_glob() -> None:
    names = ("realTweets/Twitter_volume_AAPL.csv", "realTweets/Twitter_volume_FB.csv", "x/y.csv")
    assert eval_cli.select_files(names, None) == list(names)
    assert eval_cli.select_files(names, ["Twitter_volume_FB"]) == [names[1]]
    assert eval_cli.select_files(names, ["realTweets/*"]) == list(names[:2])
    assert eval_cli.select_files(names, ["*AAPL*", "x/y.csv"]) == [names[0], names[2]]
    with pytest.raises(SystemExit, match="no NAB file matches"):
        eval_cli.select_files(names, ["nope"])


# --- the command on real NAB files ----------------------------------------------------------


def nab_root() -> Path | None:
    env = os.environ.get("NAB_ROOT") or os.environ.get("IOTAD_NAB_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "nab"
    return root if (root / "labels" / "combined_windows.json").is_file() else None


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    return eval_cli.main(parser.parse_args(argv))


def test_cli_naive_run_writes_csvs_summary_and_plot(tmp_path: Path, capsys) -> None:
    root = nab_root()
    if root is None:
        pytest.skip("NAB corpus not found: set NAB_ROOT or put it at ../shared/nab")
    files = ["exchange-3_cpm_results", "exchange-4_cpc_results"]
    argv = ["nab", "--nab-root", str(root), "--out", str(tmp_path), "--forecaster", "naive"]
    argv += ["--jobs", "1", "--quiet", "--files", *files, "--plot", files[0]]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "reward_low_FN_rate: optimised threshold" in printed
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["run"]["files"] == 2
    assert set(doc["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    for stem in files:
        name = f"realAdExchange/{stem}.csv"
        data_rows = (root / "data" / name).read_text().count("\n")
        assert (tmp_path / name).read_text().count("\n") == data_rows
        assert doc["files"][name]["rows"] == data_rows - 1
    assert (tmp_path / "realAdExchange" / f"{files[0]}.png").stat().st_size > 10_000


# --- with the real LSTM pipeline ------------------------------------------------------------


@pytest.mark.slow
def test_lstm_replay_of_a_prefix_matches_the_whole_file(tmp_path: Path) -> None:
    pytest.importorskip("training.pipeline", reason="training pipeline not written yet")
    ts, values = series(1200)
    cfg = ReplayConfig(model="lstm")
    artifact, forecaster, _ = fit_forecaster("f/value", ts[:180], values[:180], cfg, tmp_path)
    whole = replay_fitted("cat/f.csv", ts, values, 180, artifact, forecaster, cfg)
    prefix = replay_fitted("cat/f.csv", ts[:801], values[:801], 180, artifact, forecaster, cfg)
    assert same(prefix.status, whole.status[:801])
    # Same batches except the prefix's last one, which LiteRT may pad to another size.
    np.testing.assert_allclose(prefix.core_score[180:], whole.core_score[180:801], rtol=1e-5)
    assert np.all((whole.anomaly_score >= 0) & (whole.anomaly_score <= 1))


def test_detection_overrides_have_the_worker_bounds() -> None:
    from detector.engine.detection_config import DetectionConfig

    got = eval_cli.detection_config({"threshold": 0.7, "resolve_after": 2})
    assert got == DetectionConfig(threshold=0.7, resolve_after=2)
    # A threshold from the old score scale would turn every alert off.
    with pytest.raises(SystemExit, match="threshold"):
        eval_cli.detection_config({"threshold": 4})


def test_overrides_decode_json_and_reject_unknown_fields() -> None:
    from detector.engine.detection_config import DetectionConfig

    got = eval_cli.parse_overrides(["threshold=0.7", "resolve_after=2"], DetectionConfig)
    assert got == {"threshold": 0.7, "resolve_after": 2}
    assert eval_cli.parse_overrides(["units=[16, 16]", "cell=gru"]) == {
        "units": [16, 16],
        "cell": "gru",
    }
    with pytest.raises(SystemExit, match="no field 'nope'"):
        eval_cli.parse_overrides(["nope=1"], DetectionConfig)
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        eval_cli.parse_overrides(["threshold"], DetectionConfig)


def test_a_file_that_fails_counts_as_no_detections_and_is_named(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    root = nab_root()
    if root is None:
        pytest.skip("NAB corpus not found: set NAB_ROOT or put it at ../shared/nab")
    from training import nab_run

    bad = "realAdExchange/exchange-4_cpc_results.csv"
    real = nab_run.evaluate_file

    def training_fails_on_one(nab: Path, name: str, out: Path, cfg: ReplayConfig) -> dict:
        if name == bad:
            raise RuntimeError("training failed on purpose")
        return real(nab, name, out, cfg)

    monkeypatch.setattr(nab_run, "evaluate_file", training_fails_on_one)
    files = ["exchange-3_cpm_results", "exchange-4_cpc_results"]
    argv = ["nab", "--nab-root", str(root), "--out", str(tmp_path), "--forecaster", "naive"]
    argv += ["--jobs", "1", "--quiet", "--files", *files, "--cv", "2", "--cv-grid", "defaults"]
    assert run_cli(argv) == 1  # the run says something failed...
    printed = capsys.readouterr().out
    assert f"naive: 1 file(s) failed, scored as no detections: {bad}" in printed
    assert f"naive: failed files (scored as no detections): {bad} (RuntimeError" in printed
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["run"]["failed"] == {bad: "RuntimeError: training failed on purpose"}
    # ...and every table still counts it: its windows are missed, it has no false alarm.
    for profile in doc["profiles"].values():
        for result in profile.values():
            assert set(result["per_file"]) == {bad, f"realAdExchange/{files[0]}.csv"}
            mine = result["per_file"][bad]
            assert mine["score"] == 0.0 and mine["windows_detected"] == 0
            assert mine["fp_rows"] == 0 and mine["windows_missed"] > 0
            assert result["windows_missed"] >= mine["windows_missed"]
    cv = json.loads((tmp_path / "cv.json").read_text())["naive"]
    assert cv["failed"] == {bad: "RuntimeError: training failed on purpose"}
    assert sorted(cv["folds"]) == sorted([bad, f"realAdExchange/{files[0]}.csv"])
