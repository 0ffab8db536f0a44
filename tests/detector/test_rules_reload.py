"""Reloading the rules file: on change, on request, and a bad file keeps the rules in force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from detector.metrics import WorkerMetrics
from detector.rules import RuleSet
from detector.rules_file import RulesError
from detector.rules_reload import RulesReloader

MUTE_A = '[[rule]]\ndevice = "a"\nmute = true\n'
MUTE_B = '[[rule]]\ndevice = "b"\nmute = true\n'
BAD = '[[rule]]\ndevice = "a"\nthreshold = 7\n'


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, mtime_ns: int) -> None:
    """Write and set the modification time (file systems tick coarsely: a rewrite within the
    same tick would otherwise look unchanged)."""
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.toml"
    write(path, MUTE_A, 1_000_000_000)
    registry = CollectorRegistry()
    applied: list[RuleSet] = []
    clock = Clock()
    reloader = RulesReloader(
        path, applied.append, metrics=WorkerMetrics(registry), check_interval_s=5.0, clock=clock
    )
    return path, reloader, applied, clock, registry


def muted(rules: RuleSet, device: str) -> bool:
    return rules.policy(device, "m").mute


def test_first_load_and_a_change_seen_at_the_next_check(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    assert muted(reloader.load(), "a")
    assert registry.get_sample_value("iotad_rules") == 1
    write(path, MUTE_B + MUTE_A, 3_000_000_000)
    clock.now = 1.0
    assert not reloader.poll() and applied == []  # not yet: at most every 5 s
    clock.now = 6.0
    assert reloader.poll()
    assert muted(applied[-1], "a") and muted(applied[-1], "b")
    assert registry.get_sample_value("iotad_rules") == 2
    assert registry.get_sample_value("iotad_rules_reloads_total") >= 1


def test_a_touch_without_a_change_reloads_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    reloader.load()
    os.utime(path, ns=(5_000_000_000, 5_000_000_000))
    clock.now = 10.0
    assert not reloader.poll() and applied == []
    assert registry.get_sample_value("iotad_rules_reloads_total") == 0


def test_a_bad_file_keeps_the_rules_counts_once_and_logs_each_problem(
    setup, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    reloader.load()
    write(path, BAD, 2_000_000_000)
    clock.now = 10.0
    assert not reloader.poll()
    assert applied == [] and muted(reloader.rules, "a")
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 1
    assert registry.get_sample_value("iotad_rules_stale") == 1
    assert any("threshold: must be a number in (0, 1]" in r.message for r in caplog.records)
    # Still bad at the next checks: not counted again, not logged again.
    caplog.clear()
    clock.now = 20.0
    assert not reloader.poll()
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 1
    assert caplog.records == []
    # Asked for explicitly (SIGHUP): tried, refused, counted again.
    reloader.request()
    assert not reloader.poll()
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 2
    # Fixed: taken at the next check.
    write(path, MUTE_B, 3_000_000_000)
    clock.now = 30.0
    assert reloader.poll() and muted(applied[-1], "b") and not muted(applied[-1], "a")
    assert registry.get_sample_value("iotad_rules_stale") == 0


def test_a_deleted_file_keeps_the_rules(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    reloader.load()
    path.unlink()
    clock.now = 10.0
    assert not reloader.poll()
    clock.now = 20.0
    assert not reloader.poll()
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 1
    assert muted(reloader.rules, "a") and applied == []


def test_request_reloads_before_the_interval(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, _clock, _registry = setup
    reloader.load()
    write(path, MUTE_B, 2_000_000_000)
    reloader.request()
    assert reloader.poll()  # clock still at 0
    assert muted(applied[-1], "b")


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(BAD)
    with pytest.raises(RulesError) as info:
        RulesReloader(path).load()
    assert info.value.lines == [
        f"{path}:3: rule 1: threshold: must be a number in (0, 1] (an anomaly score), got 7"
    ]
