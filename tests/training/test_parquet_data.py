"""Parquet input of `iotad train`: the CSV path's layouts, validation and drop reasons."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, expand_inputs, load_files

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAN, INF = float("nan"), float("inf")

# One row per drop reason, plus good rows. By hand: d/m keeps ts 100, 200, 300 (the second
# 200 is a duplicate_ts), e/m keeps ts 50; dropped: bad_ts 2 (null, nan), missing_value 1,
# non_finite_value 2 (nan, inf), duplicate_ts 1. 10 rows in all.
TS = [100.0, None, NAN, 200.0, 200.0, 300.0, 400.0, 500.0, 600.0, 50.0]
DEVICE = ["d", "d", "d", "d", "d", "d", "d", "d", "d", "e"]
VALUE = [1.0, 2.0, 3.0, 4.0, 9.0, 5.0, None, NAN, INF, 7.0]
CSV_TEXT = (
    "ts,device,metric,value\n100,d,m,1\n,d,m,2\nnan,d,m,3\n200,d,m,4\n200,d,m,9\n300,d,m,5\n"
    "400,d,m,\n500,d,m,nan\n600,d,m,inf\n50,e,m,7\n"
)


def write_parquet(path: Path, columns: dict[str, list[object]], types: dict | None = None) -> Path:
    types = types or {}
    table = pa.table({k: pa.array(v, type=types.get(k)) for k, v in columns.items()})
    pq.write_table(table, path)
    return path


def test_drop_reasons_match_the_same_rows_as_csv(tmp_path: Path) -> None:
    parquet = write_parquet(
        tmp_path / "h.parquet",
        {"ts": TS, "device": DEVICE, "metric": ["m"] * 10, "value": VALUE},
        {"ts": pa.float64(), "value": pa.float64()},
    )
    (tmp_path / "h.csv").write_text(CSV_TEXT)
    from_parquet = load_files([parquet])
    from_csv = load_files([tmp_path / "h.csv"])
    expected = {"bad_ts": 2, "missing_value": 1, "non_finite_value": 2, "duplicate_ts": 1}
    assert dict(from_parquet.dropped) == expected == dict(from_csv.dropped)
    assert from_parquet.rows_total == from_csv.rows_total == 10
    assert sorted(from_parquet.series) == ["d/m", "e/m"]
    for key in from_parquet.series:
        for a, b in zip(from_parquet.series[key], from_csv.series[key], strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(from_parquet.series["d/m"][1], [1.0, 4.0, 5.0])


def test_typed_columns_timestamp_integer_ms_and_text_values(tmp_path: Path) -> None:
    moments = [datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(3)]
    path = write_parquet(
        tmp_path / "a.parquet",
        {
            "timestamp": moments,
            "device": ["d"] * 3,
            "metric": ["m"] * 3,
            "value": ["1.5", "abc", " 2 "],
        },
        {"timestamp": pa.timestamp("ms", tz="UTC")},
    )
    naive = write_parquet(
        tmp_path / "b.parquet",
        {
            "time": [m.replace(tzinfo=None) for m in moments],
            "device": ["n"] * 3,
            "metric": ["m"] * 3,
            "value": [1, 2, 3],
        },
        {"time": pa.timestamp("s"), "value": pa.int32()},
    )
    millis = write_parquet(
        tmp_path / "c.parquet",
        {
            "ts": [1_704_067_200_000, 1_704_067_201_000],
            "device": ["ms", "ms"],
            "metric": ["m", "m"],
            "value": [True, 4.0],
        },
        {"ts": pa.int64(), "value": pa.float64()},
    )
    data = load_files([path, naive, millis])
    t0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
    np.testing.assert_array_equal(data.series["d/m"][0], [t0, t0 + 2])
    np.testing.assert_array_equal(data.series["d/m"][1], [1.5, 2.0])
    np.testing.assert_array_equal(data.series["n/m"][0], [t0, t0 + 1, t0 + 2])
    np.testing.assert_array_equal(data.series["ms/m"][0], [t0, t0 + 1])
    assert dict(data.dropped) == {"bad_value": 1}
    assert data.rows_total == 8


def test_wide_and_nab_parquet_and_bad_names(tmp_path: Path) -> None:
    nab = write_parquet(tmp_path / "machine.parquet", {"timestamp": [1.0, 2.0], "value": [3, 4]})
    wide = write_parquet(tmp_path / "w.parquet", {"ts": [1.0], "temp": [20.0], "rpm": [None]})
    assert sorted(load_files([nab]).series) == ["machine/value"]
    with pytest.raises(DataError, match=r"wide Parquet \(columns ts, temp, rpm\)"):
        load_files([wide])
    loaded = load_files([wide], device="press")
    assert sorted(loaded.series) == ["press/temp"] and dict(loaded.dropped) == {"missing_value": 1}
    bad = write_parquet(
        tmp_path / "bad.parquet",
        {"ts": [1.0], "device": ["has space"], "metric": ["m"], "value": [1.0]},
    )
    with pytest.raises(DataError, match="device name 'has space' is not valid"):
        load_files([bad])
    header = write_parquet(tmp_path / "h.parquet", {"when": [1.0], "what": [2.0]})
    with pytest.raises(DataError, match="bad Parquet header 'when,what'"):
        load_files([header])


def test_a_directory_is_its_csv_and_parquet_files_in_name_order(tmp_path: Path) -> None:
    cols = {"ts": [2.0, 3.0], "device": ["d", "d"], "metric": ["m", "m"], "value": [2.0, 3.0]}
    write_parquet(tmp_path / "history-2.parquet", cols)
    (tmp_path / "history-1.csv").write_text("ts,device,metric,value\n1,d,m,1\n")
    (tmp_path / "history-3.csv.part").write_text("ts,device,metric,value\n9,d,m,9\n")
    (tmp_path / "history-4.parquet.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not data")
    assert [p.name for p in expand_inputs([tmp_path])] == ["history-1.csv", "history-2.parquet"]
    data = load_files([tmp_path])
    np.testing.assert_array_equal(data.series["d/m"][1], [1.0, 2.0, 3.0])
    assert [Path(str(f["path"])).name for f in data.files] == [
        "history-1.csv",
        "history-2.parquet",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no \.csv or \.parquet files"):
        load_files([tmp_path / "empty"])


def test_corrupt_parquet_and_missing_pyarrow_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="is not a readable Parquet file") as caught:
        load_files([broken])
    assert "\n" not in str(caught.value)
    good = write_parquet(tmp_path / "g.parquet", {"timestamp": [1.0], "value": [1.0]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"pip install 'iotad\[parquet\]'"):
        load_files([good])
