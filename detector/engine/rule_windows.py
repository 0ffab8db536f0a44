"""Maintenance windows of the rules file: one-off and recurring, judged on reading time.

Pure: no wall clock. A window is asked about the readings' own timestamps (epoch seconds),
so a replay, the evaluation and the live worker agree on which readings fell inside.

- `OneOffWindow`: ``[start, end)`` between two instants (ISO datetimes with a UTC offset).
- `RecurringWindow`: from a wall-clock time to another on some days of the week, in a time
  zone (`zoneinfo`). An end at or before the start ends the next day (``22:00``-``02:00``).
  Wall times follow the zone's clock changes: ``06:00``-``10:00`` Europe/Berlin is
  05:00-09:00 UTC in winter and 04:00-08:00 UTC in summer. On the night the clocks change, a
  time that does not exist (spring, 02:30) is read with the offset before the change (so it
  falls an hour later), and a time that exists twice (autumn) is its first occurrence
  (PEP 495 ``fold=0``); the window is as long as the wall clock says, an hour shorter or
  longer than on other days.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))
_TS_MIN, _TS_MAX = 0.0, 253_370_764_800.0  # 1970 to 9999-01-01: a year inside what datetime holds
_SPAN_S = 7 * 86_400.0
"""A batch spanning more than this is asked day by day (see `WindowSet.contains`)."""


@dataclass(frozen=True, slots=True)
class OneOffWindow:
    """``[start_ts, end_ts)`` in epoch seconds; `text` says it as it was written."""

    start_ts: float
    end_ts: float
    text: str

    def intervals(self, lo: float, hi: float) -> list[tuple[float, float]]:
        """The window if it overlaps ``[lo, hi]``."""
        if self.end_ts <= lo or self.start_ts > hi:
            return []
        return [(self.start_ts, self.end_ts)]

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class RecurringWindow:
    """From `start` to `end` (wall clock in `timezone`) on `days` (0 = Monday)."""

    days: frozenset[int]
    start: time
    end: time
    timezone: str

    def intervals(self, lo: float, hi: float) -> list[tuple[float, float]]:
        """Every occurrence overlapping ``[lo, hi]``, as epoch-second intervals."""
        lo, hi = max(lo, _TS_MIN), min(hi, _TS_MAX)
        if not lo <= hi:
            return []
        tz = ZoneInfo(self.timezone)
        # An occurrence that starts the local day before `lo` may still run into it.
        first = datetime.fromtimestamp(lo, tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(hi, tz).date()
        out: list[tuple[float, float]] = []
        day = first
        while day <= last:
            if day.weekday() in self.days:
                span = self._occurrence(day, tz)
                if span is not None and span[1] > lo and span[0] <= hi:
                    out.append(span)
            day += timedelta(days=1)
        return out

    def _occurrence(self, day: date, tz: ZoneInfo) -> tuple[float, float] | None:
        end_day = day if self.end > self.start else day + timedelta(days=1)
        start = datetime.combine(day, self.start, tzinfo=tz).timestamp()
        end = datetime.combine(end_day, self.end, tzinfo=tz).timestamp()
        # A window inside the hour skipped in spring has no length that night.
        return (start, end) if end > start else None

    def describe(self) -> str:
        if self.days == ALL_DAYS:
            days = "every day"
        else:
            days = "every " + ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"


MaintenanceWindow = OneOffWindow | RecurringWindow


class WindowSet:
    """Several windows asked together: which readings fall inside any of them."""

    def __init__(self, windows: Iterable[MaintenanceWindow]) -> None:
        self.windows = tuple(windows)

    def intervals(self, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        """Sorted, merged ``(starts, ends)`` of the occurrences overlapping ``[lo, hi]``."""
        spans = sorted(s for w in self.windows for s in w.intervals(lo, hi))
        merged: list[list[float]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        starts = np.array([m[0] for m in merged], dtype=np.float64)
        ends = np.array([m[1] for m in merged], dtype=np.float64)
        return starts, ends

    def contains(self, ts: np.ndarray) -> np.ndarray:
        """One bool per timestamp: inside a window (start included, end excluded)."""
        ts = np.asarray(ts, dtype=np.float64)
        out = np.zeros(ts.shape, dtype=bool)
        finite = np.isfinite(ts)
        if not finite.any():
            return out
        lo, hi = float(ts[finite].min()), float(ts[finite].max())
        if hi - lo <= _SPAN_S:
            inside: np.ndarray = self._contains(ts, lo, hi) & finite
            return inside
        # A batch spread over years (a device replaying old readings): occurrences of the
        # days that hold readings only, not of every day in between.
        days = np.floor(np.where(finite, ts, 0.0) / 86_400.0)
        for day in np.unique(days[finite]).tolist():
            chosen = finite & (days == day)
            sub = ts[chosen]
            out[chosen] = self._contains(sub, float(sub.min()), float(sub.max()))
        return out

    def _contains(self, ts: np.ndarray, lo: float, hi: float) -> np.ndarray:
        starts, ends = self.intervals(lo, hi)
        if starts.size == 0:
            return np.zeros(ts.shape, dtype=bool)
        i = np.searchsorted(starts, ts, side="right") - 1
        return (i >= 0) & (ts < ends[np.maximum(i, 0)])

    def active_at(self, ts: float) -> list[MaintenanceWindow]:
        """The windows that contain `ts` (for `iotad rules explain`)."""
        if not math.isfinite(ts):
            return []
        return [w for w in self.windows if any(s <= ts < e for s, e in w.intervals(ts, ts))]


def iso(ts: float, timezone: str = "UTC") -> str:
    """`ts` as an ISO datetime in `timezone` (for messages)."""
    return datetime.fromtimestamp(ts, ZoneInfo(timezone) if timezone != "UTC" else UTC).isoformat()
