"""CSV loading: long (epoch s, epoch ms, ISO 8601), NAB and wide files; drops are counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, clean_series, from_arrays, load_files, parse_ts

# 2023-11-14T22:13:20Z
T0 = 1_700_000_000


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("1700000000000", 1_700_000_000.0),  # > 1e11: milliseconds
        ("1700000000250", 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("2023-11-14 22:13:20", 1_700_000_000.0),  # naive: UTC (NAB style)
        ("2014-04-01 00:00:00", 1_396_310_400.0),
        ("1970-01-01", 0.0),
        ("yesterday", None),
        ("", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_ts(text: str, expected: float | None) -> None:
    assert parse_ts(text) == expected


def test_long_format_mixed_timestamp_kinds_sorted_and_cleaned(tmp_path: Path) -> None:
    path = write(
        tmp_path / "plant.csv",
        "ts,device,metric,value\n"
        f"{T0 + 120},press1,temp,3.0\n"
        f"{(T0 + 60) * 1000},press1,temp,2.0\n"  # epoch ms
        "2023-11-14T22:13:20Z,press1,temp,1.0\n"  # ISO, = T0
        f"{T0 + 60},press1,temp,99.0\n"  # duplicate of the ms reading's ts
        f"{T0},press1,vib,\n"  # missing value
        f"{T0},press1,vib,nan\n"  # non-finite
        f"{T0},press1,vib,inf\n"  # non-finite
        f"{T0},press1,vib,hot\n"  # not a number
        "soon,press1,vib,1.0\n"  # bad timestamp
        f"{T0},press1,vib\n"  # too few fields
        f"{T0 + 5},press1,vib,0.5\n"
        "\n",  # blank line: not a reading
    )
    data = load_files([path])
    assert sorted(data.series) == ["press1/temp", "press1/vib"]
    ts, values = data.series["press1/temp"]
    assert ts.tolist() == [T0, T0 + 60, T0 + 120]
    assert values.tolist() == [1.0, 2.0, 3.0]  # the first of two equal timestamps is kept
    assert data.series["press1/vib"][1].tolist() == [0.5]
    assert data.rows_total == 11
    assert dict(data.dropped) == {
        "duplicate_ts": 1,
        "missing_value": 1,
        "non_finite_value": 2,
        "bad_value": 1,
        "bad_ts": 1,
        "bad_row": 1,
    }
    assert data.files[0]["rows"] == 11
    assert len(data.fingerprint) == 64


def test_columns_of_a_long_file_may_come_in_any_order(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "value,metric,Device,TIMESTAMP\n1.5,temp,m1,1000\n")
    data = load_files([path])
    assert data.series["m1/temp"][0].tolist() == [1000.0]
    assert data.series["m1/temp"][1].tolist() == [1.5]


def test_nab_file_device_is_the_stem_metric_is_value(tmp_path: Path) -> None:
    path = write(
        tmp_path / "art_daily_small_noise.csv",
        "timestamp,value\n2014-04-01 00:05:00,20.5\n2014-04-01 00:00:00,18.0\n",
    )
    data = load_files([path])
    ts, values = data.series["art_daily_small_noise/value"]
    assert ts.tolist() == [1_396_310_400.0, 1_396_310_700.0]
    assert values.tolist() == [18.0, 20.5]
    renamed = load_files([path], device="press7")
    assert list(renamed.series) == ["press7/value"]


def test_wide_file_needs_device_and_counts_each_cell(tmp_path: Path) -> None:
    path = write(
        tmp_path / "wide.csv",
        "Time,temp,Vibration\n100,20.0,0.1\n200,,0.2\nlater,21.0,0.3\n300,22.0,inf\n",
    )
    with pytest.raises(DataError, match="--device"):
        load_files([path])
    data = load_files([path], device="press1")
    assert data.series["press1/temp"][1].tolist() == [20.0, 22.0]
    assert data.series["press1/Vibration"][1].tolist() == [0.1, 0.2]
    assert data.rows_total == 8  # 4 rows x 2 metrics
    assert dict(data.dropped) == {"missing_value": 1, "bad_ts": 2, "non_finite_value": 1}


def test_several_files_are_merged_per_series(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", "ts,device,metric,value\n300,d,m,3\n100,d,m,1\n")
    b = write(tmp_path / "b.csv", "ts,device,metric,value\n200,d,m,2\n100,d,m,9\n")
    data = load_files([a, b])
    assert data.series["d/m"][1].tolist() == [1.0, 2.0, 3.0]
    assert data.dropped["duplicate_ts"] == 1
    assert [f["rows"] for f in data.files] == [2, 2]
    assert data.fingerprint != load_files([a]).fingerprint


def test_fingerprint_of_one_file_is_its_sha256(tmp_path: Path) -> None:
    import hashlib

    text = "ts,device,metric,value\n1,d,m,1\n"
    path = write(tmp_path / "a.csv", text)
    assert load_files([path]).fingerprint == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("name", "text", "device", "message"),
    [
        ("empty.csv", "", None, "is empty"),
        ("bad.csv", "when,what\n1,2\n", None, "bad CSV header"),
        ("dup.csv", "ts,a,a\n1,2,3\n", "d", "bad CSV header"),
        ("name.csv", "ts,device,metric,value\n1,press 1,temp,2\n", None, "'press 1'"),
        ("slash.csv", "ts,device,metric,value\n1,p1,temp/x,2\n", None, "'temp/x'"),
        ("wide.csv", "ts,temp\n1,2\n", "bad/device", "'bad/device'"),
        ("col.csv", "ts,tëmp\n1,2\n", "d", "'tëmp'"),
    ],
)
def test_bad_input_gives_one_clear_line(
    tmp_path: Path, name: str, text: str, device: str | None, message: str
) -> None:
    with pytest.raises(DataError) as info:
        load_files([write(tmp_path / name, text)], device=device)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_no_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_files([tmp_path / "nope.csv"])
    with pytest.raises(DataError, match="no input files"):
        load_files([])


def test_clean_series_sorts_and_drops_by_hand() -> None:
    ts, values, dropped = clean_series(
        np.array([3.0, 1.0, np.nan, 2.0, 1.0]), np.array([30.0, 10.0, 5.0, np.inf, 11.0])
    )
    assert ts.tolist() == [1.0, 3.0] and values.tolist() == [10.0, 30.0]
    assert dict(dropped) == {"bad_ts": 1, "non_finite_value": 1, "duplicate_ts": 1}


def test_from_arrays_checks_names_and_counts() -> None:
    data = from_arrays({"d/m": (np.array([2.0, 1.0, 1.0]), np.array([2.0, 1.0, 5.0]))})
    assert data.series["d/m"][1].tolist() == [1.0, 2.0]
    assert data.rows_total == 3 and dict(data.dropped) == {"duplicate_ts": 1}
    with pytest.raises(DataError, match="'device/metric'"):
        from_arrays({"nometric": (np.zeros(1), np.zeros(1))})
    with pytest.raises(DataError, match="'a b'"):
        from_arrays({"a b/m": (np.zeros(1), np.zeros(1))})
