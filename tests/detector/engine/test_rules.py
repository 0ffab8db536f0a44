"""The rules file: parsing, every check with its line, matching and precedence."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from detector.engine.rule_windows import ALL_DAYS, OneOffWindow, RecurringWindow
from detector.engine.rules import Rule, RuleSet
from detector.worker.rules_file import RulesError, load_rules, parse_rules

ROOT = Path(__file__).resolve().parents[3]


def parse(text: str) -> RuleSet:
    return parse_rules(text.encode(), "r.toml")


def errors(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse(text)
    return info.value.lines


def test_the_shipped_example_loads() -> None:
    rules = load_rules(ROOT / "deploy" / "rules.example.toml")
    assert len(rules) >= 4
    policy = rules.policy("line2-press", "vibration")
    assert policy.labels == {"site": "north", "team": "line2"}
    assert len(policy.windows) == 2


def test_fields_and_both_window_kinds() -> None:
    rules = parse(
        """
[[rule]]
name = "line 2"
device = "line2-*"
metric = "temp*"
threshold = 0.7
mute = false
severity = "critical"
labels = { team = "line2" }

[[rule.maintenance]]
days = ["Sun", "saturday"]
start = "22:00"
end = 06:00:00
timezone = "Europe/Berlin"

[[rule.maintenance]]
start = 2026-12-01T06:00:00+01:00
end = "2026-12-01T10:00:00Z"
"""
    )
    (rule,) = rules.rules
    assert (rule.name, rule.device, rule.metric) == ("line 2", "line2-*", "temp*")
    assert (rule.threshold, rule.mute, rule.severity) == (0.7, False, "critical")
    assert rule.labels == {"team": "line2"}
    assert rule.line == 2
    recurring, one_off = rule.maintenance
    assert recurring == RecurringWindow(frozenset({5, 6}), time(22), time(6), "Europe/Berlin")
    assert isinstance(one_off, OneOffWindow)
    assert one_off.start_ts == datetime(2026, 12, 1, 5, tzinfo=UTC).timestamp()
    assert one_off.end_ts == datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()


def test_defaults_match_everything_every_day_in_utc() -> None:
    rules = parse('[[rule]]\nmute = true\n[[rule.maintenance]]\nstart = "01:00"\nend = "02:00"\n')
    assert rules.policy("any", "thing").mute
    assert rules.rules[0].maintenance[0] == RecurringWindow(ALL_DAYS, time(1), time(2), "UTC")


def test_an_empty_file_has_no_rules() -> None:
    rules = parse("# nothing yet\n")
    assert len(rules) == 0
    assert rules.policy("a", "b").plain


def test_every_problem_one_line_with_file_line_rule_and_field() -> None:
    lines = errors(
        """[[rule]]
name = "x"
threshold = 1.5
mute = "yes"
labels = { alertname = "a", "bad-name" = "b", severity = "c", __x = "d", team = "" }
colour = "red"

[[rule.maintenance]]
days = ["funday"]
start = "25:00"
end = "10:00"
timezone = "Mars/Olympus"

[[rule.maintenance]]
start = 2026-12-01T06:00:00
end = 2026-12-01T05:00:00+01:00

[[rule.maintenance]]
start = 2026-12-01T06:00:00+01:00
end = 2026-12-01T05:00:00+01:00

[[rule]]
severity = ""
device = ""

[[rule.maintenance]]
start = "06:00"
"""
    )
    assert lines == [
        'r.toml:6: rule 1 "x": colour: unknown field (misspelt?); known: device, labels, '
        "maintenance, metric, mute, name, severity, threshold",
        'r.toml:3: rule 1 "x": threshold: must be a number in (0, 1] (an anomaly score), got 1.5',
        "r.toml:4: rule 1 \"x\": mute: must be true or false, got 'yes'",
        'r.toml:5: rule 1 "x": labels.alertname: set by the worker itself',
        'r.toml:5: rule 1 "x": labels.bad-name: not a label name ([A-Za-z_][A-Za-z0-9_]*, '
        "not __...)",
        'r.toml:5: rule 1 "x": labels.severity: set by the worker itself; use the severity field',
        'r.toml:5: rule 1 "x": labels.__x: not a label name ([A-Za-z_][A-Za-z0-9_]*, not __...)',
        'r.toml:5: rule 1 "x": labels.team: value must be 1-256 printable characters',
        'r.toml:12: rule 1 "x": maintenance[1].timezone: not a known time zone (e.g. '
        "Europe/Berlin, UTC), got 'Mars/Olympus'",
        'r.toml:9: rule 1 "x": maintenance[1].days: day names are mon, tue, wed, thu, fri, sat, '
        "sun (or in full), got ['funday']",
        "r.toml:10: rule 1 \"x\": maintenance[1].start: not a time of day: '25:00'",
        'r.toml:15: rule 1 "x": maintenance[2].start: needs a UTC offset (e.g. +01:00 or Z): '
        "2026-12-01T06:00:00 is ambiguous",
        'r.toml:20: rule 1 "x": maintenance[3].end: must be after start',
        "r.toml:24: rule 2: device: must be a glob pattern of 1-256 printable characters, got ''",
        "r.toml:23: rule 2: severity: must be 1-256 printable characters, got ''",
        "r.toml:26: rule 2: maintenance[1].end: required",
    ]


def test_toml_syntax_error_names_its_line() -> None:
    assert errors('[[rule]]\nname = "a"\nmute = \n') == ["r.toml:3: not valid TOML: Invalid value"]


def test_unknown_top_level_table_and_not_utf8() -> None:
    assert errors("[[rule]]\nmute = true\n\n[[rules]]\nmute = true\n") == [
        "r.toml:4: rules: unknown table or key (rules go in [[rule]] tables)"
    ]
    with pytest.raises(RulesError, match="not UTF-8"):
        parse_rules(b"\xff\xfe", "r.toml")


def test_oversize_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="larger than"):
        parse_rules(b"#" * 2_000_000, "r.toml")
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_later_rules_override_field_by_field_labels_merge_windows_add() -> None:
    w1 = RecurringWindow(ALL_DAYS, time(1), time(2), "UTC")
    w2 = RecurringWindow(ALL_DAYS, time(3), time(4), "UTC")
    rules = RuleSet(
        [
            Rule(
                device="line2-*",
                mute=True,
                threshold=0.6,
                labels={"team": "a", "site": "n"},
                maintenance=(w1,),
            ),
            Rule(device="line2-press", mute=False, labels={"team": "b"}, maintenance=(w2,)),
            Rule(metric="vib*", threshold=0.9, severity="critical"),
        ]
    )
    press = rules.policy("line2-press", "temp")
    assert (press.mute, press.threshold, press.severity) == (False, 0.6, None)
    assert press.labels == {"team": "b", "site": "n"}
    assert [w for _, w in press.windows] == [w1, w2]
    assert press.matched == (0, 1)
    assert press.sources == {"mute": 1, "threshold": 0, "labels.team": 1, "labels.site": 0}
    other = rules.policy("line2-oven", "vibration")
    assert (other.mute, other.threshold, other.severity) == (True, 0.9, "critical")
    assert rules.policy("line1-press", "temp").plain


def test_globs_are_fnmatch_and_case_sensitive() -> None:
    rules = RuleSet(
        [
            Rule(device="press-?", mute=True),
            Rule(device="oven-[12]", metric="temp", mute=True),
            Rule(device="Mill", mute=True),
        ]
    )
    assert rules.policy("press-1", "x").mute
    assert not rules.policy("press-10", "x").mute
    assert rules.policy("oven-2", "temp").mute
    assert not rules.policy("oven-3", "temp").mute
    assert not rules.policy("oven-1", "temperature").mute
    assert rules.policy("Mill", "x").mute
    assert not rules.policy("mill", "x").mute


def test_many_names_past_the_cache_bound_keep_the_right_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import detector.engine.rules as rules_module

    monkeypatch.setattr(rules_module, "_CACHE_MAX", 4)
    rules = RuleSet([Rule(device="d1*", mute=True)])
    for i in range(20):
        assert rules.policy(f"d{i}", "m").mute == str(i).startswith("1")
