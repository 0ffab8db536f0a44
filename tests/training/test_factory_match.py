"""Matching alerts to faults and the benchmark's scores, on literal examples worked by hand."""

from __future__ import annotations

import pytest

from detector.sim.faults import Fault
from training.factory_match import Alert, match, overall, per_kind

# Readings every 60 s; grace 5 readings = 300 s.
F_SPIKE = Fault("spike", "a", "temperature", 1000.0, 1060.0, 9.0)
F_SILENT = Fault("silent", "b", "*", 2000.0, 2600.0, 0.0)
F_DRIFT = Fault("drift", "a", "current", 5000.0, 5600.0, 8.0)
FAULTS = [F_SPIKE, F_SILENT, F_DRIFT]
ALERTS = [
    Alert("a", "temperature", 1000.0),  # F_SPIKE on its first reading
    Alert("a", "temperature", 1300.0),  # F_SPIKE again, 240 s after its end: inside grace
    Alert("b", "vibration", 2600.0),  # F_SILENT (any metric of b), at its end
    Alert("a", "current", 4990.0),  # before F_DRIFT began: false
    Alert("a", "vibration", 5100.0),  # F_DRIFT's device, another metric: false
    Alert("c", "temperature", 9000.0),  # nothing there: false
]


def test_alerts_match_faults_on_their_series_within_start_to_end_plus_grace() -> None:
    outcomes, matched = match(FAULTS, ALERTS, 60.0, 5)
    assert matched == [0, 0, 1, None, None, None]
    spike, silent, drift = outcomes
    assert (spike.detected, spike.delay_readings, spike.before_end) == (True, 0.0, True)
    # The silent device's first alert is at its end: 600 s / 60 s = 10 readings, not before.
    assert (silent.detected, silent.delay_readings, silent.before_end) == (True, 10.0, False)
    assert (drift.detected, drift.first_alert_ts, drift.delay_readings) == (False, None, None)


def test_grace_boundary_is_inclusive_and_overlaps_go_to_the_earlier_fault() -> None:
    at_edge = Alert("a", "temperature", 1060.0 + 300.0)
    past = Alert("a", "temperature", 1060.0 + 301.0)
    assert match([F_SPIKE], [at_edge, past], 60.0, 5)[1] == [0, None]
    later = Fault("level_shift", "a", "temperature", 1200.0, 1800.0, 3.0)
    assert match([later, F_SPIKE], [Alert("a", "temperature", 1250.0)], 60.0, 5)[1] == [1]


def test_overall_scores() -> None:
    outcomes, matched = match(FAULTS, ALERTS, 60.0, 5)
    o = overall(outcomes, matched, series_days=2.0)
    # 2 of 3 faults found, 1 before its end; delays 0 and 10 -> median 5.
    assert (o.detection.faults, o.detection.detected, o.detection.before_end) == (3, 2, 1)
    assert o.detection.recall == pytest.approx(2 / 3)
    assert o.detection.before_end_fraction == pytest.approx(1 / 3)
    assert o.detection.median_delay == 5.0
    # 6 alerts, 3 matched: precision 1/2; 3 false over 2 series-days.
    assert (o.alerts, o.true_alerts, o.false_alerts) == (6, 3, 3)
    assert o.precision == 0.5 and o.false_per_series_day == 1.5
    # F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = 4/7
    assert o.f1 == pytest.approx(4 / 7)


def test_per_kind_scores_and_no_alerts() -> None:
    outcomes, _ = match(FAULTS, ALERTS, 60.0, 5)
    kinds = per_kind(outcomes, ["spike", "silent", "drift", "stuck"])
    assert kinds["spike"].to_dict() == {
        "faults": 1,
        "detected": 1,
        "recall": 1.0,
        "before_end": 1.0,
        "median_delay_readings": 0.0,
    }
    assert (kinds["silent"].recall, kinds["silent"].before_end_fraction) == (1.0, 0.0)
    assert (kinds["drift"].recall, kinds["drift"].median_delay) == (0.0, None)
    assert kinds["stuck"].faults == 0 and kinds["stuck"].recall is None
    silent_run = overall(match(FAULTS, [], 60.0, 5)[0], [], series_days=2.0)
    assert silent_run.precision is None and silent_run.f1 == 0.0
    assert silent_run.false_per_series_day == 0.0
