"""What `iotad demo` prints: live lines while it runs and the summary at the end.

Pure bookkeeping and formatting, no MQTT or threads of its own: `demo.py` feeds alert
messages (as the worker published them on ``alerts/#``), injected faults (the simulator's
ground truth) and counter readings in, and prints what comes out. Times are shown relative
to the start of the live run, ``+12s``, in sensor time for alerts and faults.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import msgspec

from detector.sim.simulation import ALL_METRICS, Fault
from detector.worker.alerts import AlertMessage


class Console:
    """Prints lines atomically from any thread; `quiet` keeps only `always` lines."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False) -> None:
        self.out = out or sys.stdout
        self.quiet = quiet
        self._lock = threading.Lock()

    def line(self, text: str = "", *, always: bool = False) -> None:
        if self.quiet and not always:
            return
        with self._lock:
            print(text, file=self.out, flush=True)


def rel(ts: float, t0: float) -> str:
    """``+12s``: `ts` relative to the run's start `t0` (history before it is ``-5s``)."""
    return f"{ts - t0:+.0f}s"


def _num(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.6g}"


class AlertSeen(AlertMessage, frozen=True):
    """One alert message from the alerts topic, as the worker published it."""

    @classmethod
    def from_message(cls, doc: dict[str, Any]) -> AlertSeen:
        return msgspec.convert(doc, cls)

    def line(self, t0: float) -> str:
        """``+12s  ALERT firing    line1-mill02/current  value 45.2, expected 15.6 (...)``."""
        state = "firing  " if self.state == "firing" else "resolved"
        return (
            f"{rel(self.ts, t0):>6}  ALERT {state} {self.device}/{self.metric}  "
            f"value {_num(self.value)}, expected {_num(self.expected)} "
            f"(band {_num(self.lower)} .. {_num(self.upper)}), score {self.score:.3g}"
        )


@dataclass
class AlertBook:
    """The alerts received so far, without duplicates (QoS 1 may deliver one twice)."""

    alerts: list[AlertSeen] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, alert: AlertSeen) -> bool:
        """Keep `alert`; False when it was already there."""
        with self._lock:
            if alert.id in self._ids:
                return False
            self._ids.add(alert.id)
            self.alerts.append(alert)
            return True

    def snapshot(self) -> list[AlertSeen]:
        with self._lock:
            return list(self.alerts)

    def count(self, state: str) -> int:
        return sum(1 for a in self.snapshot() if a.state == state)


def fault_line(fault: Fault, t0: float) -> str:
    """``+12s  FAULT injected: spike on line1-mill02/current, +29.4 for 1 s``."""
    what = f"{fault.kind} on {fault.device}/{fault.metric}"
    if fault.metric == ALL_METRICS:
        what = f"{fault.kind} on {fault.device} (all metrics)"
    size = f", {fault.magnitude:+.4g}" if fault.magnitude else ""
    return (
        f"{rel(fault.start_ts, t0):>6}  FAULT injected: {what}{size} for "
        f"{fault.end_ts - fault.start_ts:.0f} s (ground truth)"
    )


def status_line(
    elapsed_s: float,
    readings: float,
    rate: float,
    active: float,
    warming: float,
    alerts: AlertBook,
) -> str:
    """The periodic line: throughput, series, alerts."""
    return (
        f"{f'+{elapsed_s:.0f}s':>6}  {rate:6.1f} readings/s ({readings:.0f} in all)  "
        f"series {active:.0f} active, {warming:.0f} warming  "
        f"alerts {alerts.count('firing')} fired, {alerts.count('resolved')} resolved"
    )


@dataclass(frozen=True)
class FaultOutcome:
    """An injected fault and the first firing alert that matched it (None: missed)."""

    fault: Fault
    alert: AlertSeen | None


def match_faults(
    faults: Sequence[Fault], alerts: Iterable[AlertSeen], grace_s: float
) -> tuple[list[FaultOutcome], list[AlertSeen]]:
    """Pair each fault with a firing alert on its series between its start and `grace_s`
    after its end; returns the outcomes and the firing alerts no fault explains.

    The grace covers alerts that come when a fault ends (a level shift that goes back
    is a jump too) and a forecaster that needs a few readings to see a drift.
    """
    firing = [a for a in alerts if a.state == "firing"]
    explained: set[str] = set()
    outcomes = []
    for fault in faults:
        hits = [
            a
            for a in firing
            if a.device == fault.device
            and (fault.metric in (a.metric, ALL_METRICS))
            # A payload carries ts to the millisecond.
            and fault.start_ts - 0.01 <= a.ts <= fault.end_ts + grace_s
        ]
        explained.update(a.id for a in hits)
        outcomes.append(FaultOutcome(fault, min(hits, key=lambda a: a.ts) if hits else None))
    return outcomes, [a for a in firing if a.id not in explained]


@dataclass
class RunTotals:
    """Counters for the summary."""

    elapsed_s: float
    processed: float
    published: int
    backfill: int
    fired: float
    resolved: float


def summary_lines(
    totals: RunTotals,
    outcomes: Sequence[FaultOutcome],
    unexplained: Sequence[AlertSeen],
    t0: float,
) -> list[str]:
    """The end-of-run summary: readings, alerts, and each injected fault, detected or not."""
    live = max(0.0, totals.processed - totals.backfill)
    rate = live / totals.elapsed_s if totals.elapsed_s > 0 else 0.0
    lines = [
        f"summary after {totals.elapsed_s:.0f} s",
        f"  readings  {totals.processed:.0f} processed by the worker ({rate:.1f}/s), "
        f"{totals.published} published ({totals.backfill} of them history sent first)",
        f"  alerts    {totals.fired:.0f} fired, {totals.resolved:.0f} resolved",
    ]
    if not outcomes:
        lines.append("  faults    none injected")
    else:
        found = sum(1 for o in outcomes if o.alert is not None)
        lines.append(f"  faults    {len(outcomes)} injected (ground truth), {found} detected:")
        for o in outcomes:
            f = o.fault
            where = f"{f.device}/{f.metric}"
            when = f"{rel(f.start_ts, t0)}..{rel(f.end_ts, t0)}"
            head = f"    {'DETECTED' if o.alert else 'MISSED  '}  {f.kind:<11} {where:<28} {when}"
            if o.alert is not None:
                a = o.alert
                head += (
                    f"  alert at {rel(a.ts, t0)}: value {_num(a.value)} vs expected "
                    f"{_num(a.expected)}, score {a.score:.3g}"
                )
            lines.append(head)
    if unexplained:
        lines.append(f"  {len(unexplained)} alert(s) without an injected fault:")
        lines.extend(f"    {a.device}/{a.metric} at {rel(a.ts, t0)}" for a in unexplained[:10])
        if len(unexplained) > 10:
            lines.append(f"    ... and {len(unexplained) - 10} more")
    return lines
