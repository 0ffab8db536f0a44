"""When the machines of the simulated plant run: shift schedules, maintenance stops, idling.

Pure: numpy only, no I/O and no wall clock. `shift_running` is the planned schedule;
`EventCalendar` draws random stops (maintenance) or pauses (idling between jobs) per machine
as a Poisson process in absolute time, so the events are the same however the plant is stepped.
"""

from __future__ import annotations

import numpy as np

DAY_S = 86_400.0
HOUR_S = 3_600.0
MONTH_S = 30 * DAY_S
# 1970-01-01 was a Thursday; shifting by 3 days makes weekday 0 Monday (as in features.py).
_WEEK_ORIGIN_S = 3 * DAY_S

SHIFT_SCHEDULES = ("24/7", "3", "2", "1")


def weekday_and_tod(ts: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Weekday (0 = Monday) and seconds into the UTC day of `ts`."""
    ts = np.asarray(ts, dtype=np.float64)
    return np.floor((ts + _WEEK_ORIGIN_S) / DAY_S) % 7, np.mod(ts, DAY_S)


def shift_running(
    ts: float, shifts: str, stagger_s: np.ndarray, break_at_s: np.ndarray, break_s: np.ndarray
) -> np.ndarray:
    """Which machines run at `ts` (UTC) under a shift schedule, one bool per machine.

    ``"3"``: Monday 06:00 to Saturday 06:00; ``"2"``: weekdays 06:00-22:00; ``"1"``: weekdays
    06:00-14:00; ``"24/7"``: always. Each machine starts `stagger_s` late and, except 24/7,
    pauses `break_s` from `break_at_s` into every 8-hour shift.
    """
    if shifts == "24/7":
        return np.ones(stagger_s.shape, dtype=bool)
    dow, tod = weekday_and_tod(ts - stagger_s)
    weekday = dow < 5
    if shifts == "3":
        on = (weekday & (tod >= 6 * HOUR_S)) | ((dow >= 1) & (dow <= 5) & (tod < 6 * HOUR_S))
    else:
        end_h = 22 if shifts == "2" else 14
        on = weekday & (tod >= 6 * HOUR_S) & (tod < end_h * HOUR_S)
    into_shift = np.mod(tod - 6 * HOUR_S, 8 * HOUR_S)
    pause = (into_shift >= break_at_s) & (into_shift < break_at_s + break_s)
    running: np.ndarray = on & ~pause
    return running


def fleet_running(
    ts: float,
    schedules: tuple[str, ...],
    stagger_s: np.ndarray,
    break_at_s: np.ndarray,
    break_s: np.ndarray,
) -> np.ndarray:
    """`shift_running` with one schedule per machine (machines grouped by schedule)."""
    kinds = set(schedules)
    if len(kinds) == 1:
        return shift_running(ts, schedules[0], stagger_s, break_at_s, break_s)
    out = np.zeros(len(schedules), dtype=bool)
    which = np.array(schedules)
    for shifts in kinds:
        idx = np.flatnonzero(which == shifts)
        out[idx] = shift_running(ts, shifts, stagger_s[idx], break_at_s[idx], break_s[idx])
    return out


class EventCalendar:
    """Random events per machine (a Poisson process of `rate_per_s`), each lasting a uniform
    ``[min_s, max_s]``; `active(ts)` says which machines are inside one.

    Each machine draws from its own stream, in time order, so the events do not depend on
    when or how often the calendar is asked. `events` lists ``(machine, start, end)`` of every
    event drawn so far (including the one each machine is waiting for).

    >>> cal = EventCalendar(2, 0.0, 60.0, 120.0, np.random.SeedSequence(1), start_ts=0.0)
    >>> cal.active(1e9).tolist()
    [False, False]
    """

    def __init__(
        self,
        n: int,
        rate_per_s: float,
        min_s: float,
        max_s: float,
        seed: np.random.SeedSequence,
        start_ts: float,
    ) -> None:
        if rate_per_s < 0 or not 0 < min_s <= max_s:
            raise ValueError("need rate_per_s >= 0 and 0 < min_s <= max_s")
        self.rate_per_s = rate_per_s
        self.min_s, self.max_s = min_s, max_s
        # The children `seed.spawn(n)` would give, without advancing `seed`'s own counter: two
        # calendars made from one seed draw the same events.
        self._rngs = [
            np.random.default_rng(
                np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, i))
            )
            for i in range(n)
        ]
        self._start = np.full(n, np.inf)
        self._end = np.full(n, np.inf)
        self.events: list[tuple[int, float, float]] = []
        if rate_per_s > 0:
            for i in range(n):
                self._draw(i, start_ts)

    def _draw(self, i: int, after_ts: float) -> None:
        rng = self._rngs[i]
        start = after_ts + rng.exponential(1.0 / self.rate_per_s)
        self._start[i] = start
        self._end[i] = start + rng.uniform(self.min_s, self.max_s)
        self.events.append((i, float(self._start[i]), float(self._end[i])))

    def active(self, ts: float) -> np.ndarray:
        """One bool per machine: inside an event at `ts` (``start <= ts < end``)."""
        if self.rate_per_s > 0:
            for i in np.flatnonzero(self._end <= ts).tolist():
                while self._end[i] <= ts:
                    self._draw(i, float(self._end[i]))
        return (self._start <= ts) & (ts < self._end)
