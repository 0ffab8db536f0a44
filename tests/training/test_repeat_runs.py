"""`longest_repeat_run` (the longest run of readings equal to the one before) and the
`WindowSet.repeat_runs` that `build_windows` records per series."""

from __future__ import annotations

import numpy as np
import pytest

from training.windowing import build_windows, longest_repeat_run


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([7.0], None),  # one reading: it never changed value
        ([], None),
        ([4.0, 4.0, 4.0, 4.0], None),  # constant
        ([1.0, 2.0], 0),
        ([1.0, 2.0, 1.0, 2.0, 1.0], 0),  # alternating: no reading equals the one before
        ([1.0, 2.0, 3.0, 3.0, 3.0], 2),  # the run at the end
        ([3.0, 3.0, 3.0, 3.0, 1.0], 3),  # the run at the start
        ([1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0], 3),  # the longest of several, in the middle
        ([5.0, 5.0, 6.0, 5.0, 5.0, 5.0], 2),  # equal values apart are not one run
        ([0.0, -0.0, 1.0], 1),  # 0.0 == -0.0, as the detector's comparison has it
    ],
)
def test_longest_repeat_run_cases(values: list[float], want: int | None) -> None:
    assert longest_repeat_run(np.array(values, dtype=np.float64)) == want


def test_longest_repeat_run_is_an_int() -> None:
    got = longest_repeat_run(np.array([1.0, 1.0, 2.0]))
    assert type(got) is int and got == 1


def test_build_windows_records_each_series_run() -> None:
    ts = 1000.0 + 60.0 * np.arange(12)
    series = {
        "d/flat": (ts, np.full(12, 3.0)),
        "d/stops": (ts, np.array([1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0, 5.0, 6.0, 7.0, 8.0])),
        # the run is in the validation part: it counts (the whole history)
        "d/late": (ts, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0, 9.0, 8.0])),
        "d/short": (ts[:3], np.array([1.0, 1.0, 1.0])),  # too short: skipped, no entry
    }
    ws = build_windows(series, window_len=3, split=0.5, method="standard")
    assert ws.repeat_runs == {"d/flat": None, "d/stops": 4, "d/late": 2}
    assert "d/short" in ws.skipped
