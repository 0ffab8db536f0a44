"""`iotad eval factory` end to end on the quick plant (naive model: no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from detector.cli import main as cli_main


def test_quick_naive_run_writes_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "factory"
    assert cli_main(["eval", "factory", "--quick", "--forecaster", "naive", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "headline (pooled) against the issue's targets" in printed
    assert "false_alerts_per_series_day" in printed and "decoupled" in printed
    summary = json.loads((out / "summary.json").read_text())
    naive = summary["models"]["naive"]
    assert naive["overall"]["faults"] == 18 and naive["failed_runs"] == 0
    assert set(naive["kinds"]) >= {"oscillation", "decoupled", "current_rise", "silent"}
    # The detector's forecast is the last value corrected by what the device's other
    # sensors say now: better than the last value alone (1.0 without the correction, below).
    assert naive["rmse"]["pooled"]["ratio_vs_naive"] < 0.95
    assert summary["config"]["shapes"] == ["small"] and summary["failed"] == {}
    faults = list(csv.DictReader((out / "faults.csv").open()))
    alerts = list(csv.DictReader((out / "alerts.csv").open()))
    assert len(faults) == 18 and len(alerts) == naive["overall"]["alerts"]
    assert sum(a["fault_kind"] != "" for a in alerts) == naive["overall"]["true_alerts"]
    # Every alert names the signal that fired it; the summary counts them per signal.
    known = {
        "forecast",
        "level",
        "relation",
        "seasonal",
        "repeat",
        "range",
        "flatline",
        "lasting",
        "silence",
    }
    assert alerts and {a["signal"] for a in alerts} <= known
    by_signal = naive["alerts_by_signal"]
    assert sum(v["true"] + v["false"] for v in by_signal.values()) == len(alerts)
    assert by_signal["silence"]["true"] == sum(
        a["signal"] == "silence" and a["fault_kind"] == "silent" for a in alerts
    )
    assert "alerts by the signal that fired them" in printed
    kinds = list(csv.DictReader((out / "kinds.csv").open()))
    assert {k["kind"] for k in kinds} >= {"spike", "all"}


def test_a_run_that_fails_counts_as_no_detections_and_is_named(tmp_path: Path) -> None:
    out = tmp_path / "factory"
    argv = ["eval", "factory", "--quick", "--quiet", "--forecaster", "lstm", "--out", str(out)]
    assert cli_main([*argv, "--train", "no_such_option=1"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    lstm = summary["models"]["lstm"]
    assert lstm["failed_runs"] == 1 and lstm["overall"]["faults"] == 18
    assert lstm["overall"]["detected"] == 0 and lstm["overall"]["alerts"] == 0
    assert "no_such_option" in summary["failed"]["small/seed0/lstm"]


def test_without_device_relations_the_naive_forecast_is_the_last_value(tmp_path: Path) -> None:
    out = tmp_path / "factory"
    argv = ["eval", "factory", "--quick", "--quiet", "--forecaster", "naive", "--out", str(out)]
    assert cli_main([*argv, "--detection", "relate_devices=false"]) == 0
    naive = json.loads((out / "summary.json").read_text())["models"]["naive"]
    assert naive["rmse"]["pooled"]["ratio_vs_naive"] == pytest.approx(1.0)


def test_a_rules_file_applies_in_the_evaluation_as_in_the_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "factory"
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\nmute = true\n")  # every series: scored, never alerts
    argv = ["eval", "factory", "--quick", "--quiet", "--model", "naive", "--out", str(out)]
    argv += ["--history-days", "1", "--stream-days", "0.5", "--prime-days", "0.25"]  # fast
    assert cli_main(argv) == 0
    plain = json.loads((out / "summary.json").read_text())
    assert plain["models"]["naive"]["overall"]["alerts"] > 0
    assert cli_main([*argv, "--rules", str(rules)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["naive"]["overall"]["alerts"] == 0
    assert summary["config"]["rules"] == str(rules)
    rules.write_text("[[rule]]\nmute = 1\n")
    assert cli_main([*argv, "--rules", str(rules)]) == 2
    assert f"{rules}:2: rule 1: mute: must be true or false" in capsys.readouterr().err
