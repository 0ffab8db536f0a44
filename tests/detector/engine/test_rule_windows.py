"""Maintenance windows: recurring ones across midnight and clock changes, one-off ones.

Expected instants are written in UTC by hand (Europe/Berlin is UTC+1 in winter, UTC+2 in
summer; in 2026 the clocks go forward on 29 March at 02:00 and back on 25 October at 03:00).
"""

from __future__ import annotations

from datetime import UTC, datetime, time

import numpy as np

from detector.engine.rule_windows import ALL_DAYS, OneOffWindow, RecurringWindow, WindowSet


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


SUNDAY = frozenset({6})
BERLIN = "Europe/Berlin"


def test_sunday_morning_in_winter_and_in_summer() -> None:
    w = RecurringWindow(SUNDAY, time(6), time(10), BERLIN)
    # 2026-12-06 is a Sunday: 06:00-10:00 CET is 05:00-09:00 UTC.
    assert w.intervals(utc(2026, 12, 6, 0), utc(2026, 12, 6, 23)) == [
        (utc(2026, 12, 6, 5), utc(2026, 12, 6, 9))
    ]
    # 2026-07-05 is a Sunday: 06:00-10:00 CEST is 04:00-08:00 UTC.
    assert w.intervals(utc(2026, 7, 5, 0), utc(2026, 7, 5, 23)) == [
        (utc(2026, 7, 5, 4), utc(2026, 7, 5, 8))
    ]
    # Not on the Saturday before.
    assert w.intervals(utc(2026, 12, 5, 0), utc(2026, 12, 5, 23)) == []


def test_membership_start_included_end_excluded() -> None:
    ws = WindowSet([RecurringWindow(SUNDAY, time(6), time(10), BERLIN)])
    ts = np.array(
        [
            utc(2026, 12, 6, 4, 59, 59),
            utc(2026, 12, 6, 5),
            utc(2026, 12, 6, 8, 59, 59),
            utc(2026, 12, 6, 9),
            utc(2026, 12, 13, 7),  # the next Sunday
            float("nan"),
        ]
    )
    assert ws.contains(ts).tolist() == [False, True, True, False, True, False]


def test_the_nights_the_clocks_change() -> None:
    w = RecurringWindow(ALL_DAYS, time(1), time(4), BERLIN)
    # Spring: 01:00 CET (00:00 UTC) to 04:00 CEST (02:00 UTC): two hours that night.
    assert w.intervals(utc(2026, 3, 29, 0), utc(2026, 3, 29, 3)) == [
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 2))
    ]
    # Autumn: 01:00 CEST (23:00 UTC the day before) to 04:00 CET (03:00 UTC): four hours.
    assert w.intervals(utc(2026, 10, 25, 0), utc(2026, 10, 25, 1)) == [
        (utc(2026, 10, 24, 23), utc(2026, 10, 25, 3))
    ]


def test_a_window_inside_the_skipped_hour_has_no_length_that_night() -> None:
    w = RecurringWindow(ALL_DAYS, time(2), time(3), BERLIN)
    assert w.intervals(utc(2026, 3, 29, 0), utc(2026, 3, 29, 12)) == []
    # The night after, as usual: 02:00-03:00 CEST is 00:00-01:00 UTC.
    assert w.intervals(utc(2026, 3, 30, 0), utc(2026, 3, 30, 12)) == [
        (utc(2026, 3, 30, 0), utc(2026, 3, 30, 1))
    ]


def test_overnight_window_belongs_to_the_day_it_starts() -> None:
    friday_night = RecurringWindow(frozenset({4}), time(22), time(2), "UTC")
    ws = WindowSet([friday_night])
    ts = np.array(
        [
            utc(2026, 12, 4, 21, 59),  # Friday, before
            utc(2026, 12, 4, 22, 0),  # Friday 22:00: in
            utc(2026, 12, 5, 1, 30),  # Saturday 01:30: still Friday's window
            utc(2026, 12, 5, 2, 0),  # Saturday 02:00: over
            utc(2026, 12, 5, 23, 0),  # Saturday night: not a Friday
            utc(2026, 12, 4, 1, 0),  # Friday 01:00: Thursday's night, not in the days
        ]
    )
    assert ws.contains(ts).tolist() == [False, True, True, False, False, False]


def test_overnight_window_across_the_spring_change() -> None:
    w = RecurringWindow(frozenset({5}), time(22), time(6), BERLIN)
    # Saturday 28 March 22:00 CET (21:00 UTC) to Sunday 06:00 CEST (04:00 UTC): 7 hours.
    assert w.intervals(utc(2026, 3, 28, 12), utc(2026, 3, 29, 12)) == [
        (utc(2026, 3, 28, 21), utc(2026, 3, 29, 4))
    ]


def test_one_off_and_recurring_together() -> None:
    one_off = OneOffWindow(utc(2026, 12, 1, 5), utc(2026, 12, 1, 9), "1 Dec")
    daily = RecurringWindow(ALL_DAYS, time(12), time(13), "UTC")
    ws = WindowSet([one_off, daily])
    ts = np.array([utc(2026, 12, 1, 4), utc(2026, 12, 1, 6), utc(2026, 12, 1, 12, 30)])
    assert ws.contains(ts).tolist() == [False, True, True]
    assert ws.active_at(utc(2026, 12, 1, 6)) == [one_off]
    assert ws.active_at(utc(2026, 12, 1, 9)) == []  # end excluded


def test_a_batch_spanning_weeks_and_overlapping_windows() -> None:
    ws = WindowSet(
        [
            RecurringWindow(SUNDAY, time(6), time(10), "UTC"),
            RecurringWindow(SUNDAY, time(8), time(12), "UTC"),
        ]
    )
    hours = np.arange(0, 24 * 14) * 3600.0 + utc(2026, 11, 30)  # Monday 30 Nov, 14 days
    inside = hours[ws.contains(hours)]
    sundays = [utc(2026, 12, 6), utc(2026, 12, 13)]
    assert inside.tolist() == [d + h * 3600.0 for d in sundays for h in range(6, 12)]


def test_a_batch_spread_over_years_is_judged_day_by_day() -> None:
    ws = WindowSet([RecurringWindow(SUNDAY, time(6), time(10), "UTC")])
    ts = np.array(
        [utc(2001, 1, 7, 7), utc(2001, 1, 8, 7), utc(2026, 12, 6, 7), utc(2026, 12, 6, 11)]
    )
    assert ws.contains(ts).tolist() == [True, False, True, False]  # 7 Jan 2001 was a Sunday


def test_timestamps_beyond_what_a_datetime_holds_are_outside() -> None:
    ws = WindowSet([RecurringWindow(ALL_DAYS, time(0), time(23, 59), "Europe/Berlin")])
    assert ws.contains(np.array([1e15, -1e12])).tolist() == [False, False]


def test_the_last_representable_days_do_not_overflow() -> None:
    ws = WindowSet([RecurringWindow(ALL_DAYS, time(22), time(2), "Pacific/Kiritimati")])
    near_end = datetime(9999, 12, 31, 12, tzinfo=UTC).timestamp()
    assert ws.contains(np.array([near_end, near_end + 3600])).tolist() == [False, False]
