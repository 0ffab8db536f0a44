"""Matching alerts to injected faults, and the factory benchmark's scores. Pure Python.

An alert (a `firing` event) matches a fault when it is on the fault's series (any series of
the device for a device-wide fault such as ``silent``) and fires within
``[start_ts, end_ts + grace readings]``. Every alert that matches no fault is a false alert.

Per fault: detected or not, the delay of its first matching alert in readings after the
fault's first reading (0 = on that reading), and whether that alert came before the fault
ended (not only at the step back to normal).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from detector.sim.faults import ALL_METRICS, Fault

DEFAULT_GRACE = 5
"""Readings after a fault's end in which an alert still counts for it: the step back to
normal (drift, level shift, stuck) shows on the first reading after the end, and the core
may need a reading or two to cross its threshold."""


@dataclass(frozen=True)
class Alert:
    """A firing alert: which series, when, and its score (NaN when unknown)."""

    device: str
    metric: str
    ts: float
    score: float = math.nan
    signal: str = ""
    """What fired it (`detector.engine.events.AlertEvent.signal`); empty when unknown."""


@dataclass(frozen=True)
class Outcome:
    """What became of one fault."""

    fault: Fault
    detected: bool
    first_alert_ts: float | None
    delay_readings: float | None
    before_end: bool


def on_series(fault: Fault, alert: Alert) -> bool:
    """The alert is on the fault's series (or on its device, for a device-wide fault)."""
    if alert.device != fault.device:
        return False
    return fault.metric == ALL_METRICS or alert.metric == fault.metric


def match(
    faults: Sequence[Fault], alerts: Sequence[Alert], interval_s: float, grace: int
) -> tuple[list[Outcome], list[int | None]]:
    """Outcome of each fault, and for each alert the index of the fault it matched (None:
    a false alert). An alert inside two faults' windows goes to the one that began first."""
    slack = grace * interval_s
    matched: list[int | None] = []
    first: dict[int, float] = {}
    for alert in alerts:
        hit = None
        for i, f in enumerate(faults):
            inside = f.start_ts <= alert.ts <= f.end_ts + slack
            if (
                inside
                and on_series(f, alert)
                and (hit is None or f.start_ts < faults[hit].start_ts)
            ):
                hit = i
        matched.append(hit)
        if hit is not None:
            first[hit] = min(first.get(hit, math.inf), alert.ts)
    outcomes = []
    for i, f in enumerate(faults):
        ts = first.get(i)
        if ts is None:
            outcomes.append(Outcome(f, False, None, None, False))
        else:
            delay = (ts - f.start_ts) / interval_s
            outcomes.append(Outcome(f, True, ts, delay, ts < f.end_ts))
    return outcomes, matched


@dataclass(frozen=True)
class KindScores:
    """Detection of the faults of one kind (or of all kinds)."""

    faults: int
    detected: int
    before_end: int
    median_delay: float | None

    @property
    def recall(self) -> float | None:
        return self.detected / self.faults if self.faults else None

    @property
    def before_end_fraction(self) -> float | None:
        """Faults alerted before they ended, over all faults of the kind."""
        return self.before_end / self.faults if self.faults else None

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "faults": self.faults,
            "detected": self.detected,
            "recall": self.recall,
            "before_end": self.before_end_fraction,
            "median_delay_readings": self.median_delay,
        }


def kind_scores(outcomes: Iterable[Outcome]) -> KindScores:
    """Recall, alerted-before-end and median delay over `outcomes`."""
    outcomes = list(outcomes)
    delays = [o.delay_readings for o in outcomes if o.delay_readings is not None]
    return KindScores(
        faults=len(outcomes),
        detected=sum(o.detected for o in outcomes),
        before_end=sum(o.before_end for o in outcomes),
        median_delay=float(statistics.median(delays)) if delays else None,
    )


def per_kind(outcomes: Iterable[Outcome], kinds: Sequence[str]) -> dict[str, KindScores]:
    """`kind_scores` of each kind in `kinds` (in that order)."""
    outcomes = list(outcomes)
    return {k: kind_scores(o for o in outcomes if o.fault.kind == k) for k in kinds}


@dataclass(frozen=True)
class Overall:
    """The headline of one run (or of several pooled): faults, alerts, and the rates."""

    detection: KindScores
    alerts: int
    true_alerts: int
    series_days: float

    @property
    def false_alerts(self) -> int:
        return self.alerts - self.true_alerts

    @property
    def precision(self) -> float | None:
        """Matched alerts over all alerts (None without alerts)."""
        return self.true_alerts / self.alerts if self.alerts else None

    @property
    def false_per_series_day(self) -> float | None:
        return self.false_alerts / self.series_days if self.series_days > 0 else None

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and event recall (0 when either is 0 or undefined)."""
        p, r = self.precision, self.detection.recall
        if not p or not r:
            return 0.0
        return 2 * p * r / (p + r)

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            **self.detection.to_dict(),
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "false_alerts": self.false_alerts,
            "series_days": self.series_days,
            "precision": self.precision,
            "false_alerts_per_series_day": self.false_per_series_day,
            "f1": self.f1,
        }


def overall(
    outcomes: Iterable[Outcome], matched: Iterable[int | None], series_days: float
) -> Overall:
    """Pool `outcomes` and the alerts' matches (`match`'s second result) of a run or runs."""
    matched = list(matched)
    return Overall(
        detection=kind_scores(outcomes),
        alerts=len(matched),
        true_alerts=sum(m is not None for m in matched),
        series_days=series_days,
    )
