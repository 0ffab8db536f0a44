"""`iotad rules check` and `iotad rules explain`, including the README's two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli import main

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deploy" / "rules.example.toml"


@pytest.fixture(autouse=True)
def _no_iotad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("IOTAD_"):
            monkeypatch.delenv(key)


def test_check_a_good_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(EXAMPLE)]) == 0
    assert re.fullmatch(r".*: ok, \d+ rules, \d+ maintenance windows\n", capsys.readouterr().out)


def test_check_a_bad_file_exits_1_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text('[[rule]]\nmute = 1\n\n[[rule]]\nlabels = { device = "x" }\n')
    assert main(["rules", "check", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}:2: rule 1: mute: must be true or false, got 1",
        f"{bad}:5: rule 2: labels.device: set by the worker itself",
    ]


def test_explain_names_the_rules_and_what_each_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "r.toml"
    rules.write_text(
        """[[rule]]
name = "line 2"
device = "line2-*"
threshold = 0.6
labels = { team = "line2" }

[[rule.maintenance]]
days = ["sun"]
start = "06:00"
end = "10:00"
timezone = "Europe/Berlin"

[[rule]]
device = "line2-press"
metric = "temp*"
threshold = 0.8
severity = "critical"
"""
    )
    argv = ["rules", "explain", "line2-press", "temperature", "--file", str(rules)]
    # Sunday 6 December 2026, 07:00 in Berlin: inside the window.
    assert main([*argv, "--env-file", "", "--at", "2026-12-06T07:00:00+01:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"series line2-press/temperature: 2 rules in {rules}",
        "matching rules, in file order (later ones override earlier ones):",
        "  rule 1 \"line 2\" (line 1): device 'line2-*', metric '*'",
        "  rule 2 (line 13): device 'line2-press', metric 'temp*'",
        "threshold: 0.8 (set by rule 2 (line 13)); IOTAD_DETECTION__THRESHOLD is 0.5",
        "mute: no",
        "severity: critical (set by rule 2 (line 13))",
        "labels:",
        '  team=line2 (set by rule 1 "line 2" (line 1))',
        "maintenance windows:",
        '  every sun 06:00-10:00 Europe/Berlin (from rule 1 "line 2" (line 1))',
        "at 2026-12-06T06:00:00+00:00: in maintenance (every sun 06:00-10:00 Europe/Berlin): "
        "scored and counted, no alert",
    ]
    # The same Sunday at 10:00 Berlin time: the window is over.
    assert main([*argv, "--env-file", "", "--at", "2026-12-06T09:00:00Z"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "at 2026-12-06T09:00:00+00:00: alerts on (no maintenance window)"
    )
    assert main(["rules", "explain", "oven", "temp", "--file", str(rules), "--env-file", ""]) == 0
    out = capsys.readouterr().out
    assert "matching rules: none" in out and "threshold: 0.5 (IOTAD_DETECTION__THRESHOLD)" in out


def test_explain_reads_the_path_and_threshold_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "r.toml"
    rules.write_text('[[rule]]\ndevice = "m"\nmute = true\n')
    monkeypatch.setenv("IOTAD_RULES__PATH", str(rules))
    monkeypatch.setenv("IOTAD_DETECTION__THRESHOLD", "0.7")
    assert main(["rules", "explain", "m", "x", "--env-file", ""]) == 0
    out = capsys.readouterr().out
    assert "threshold: 0.7 (IOTAD_DETECTION__THRESHOLD)" in out and "mute: yes" in out


def test_explain_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "explain", "a", "b", "--env-file", ""]) == 2
    assert "no rules file" in capsys.readouterr().err
    f = str(EXAMPLE)
    assert main(["rules", "explain", "a/b", "c", "--file", f, "--env-file", ""]) == 2
    assert main(["rules", "explain", "a", "c", "--file", f, "--at", "soon", "--env-file", ""]) == 2


def test_the_readme_commands_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^\.venv/bin/iotad (rules .*)$", readme, re.M)
    assert len(commands) == 2
    for command in commands:
        out = subprocess.run(
            [sys.executable, "-m", "detector", *command.split()],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout
