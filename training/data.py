"""Historical readings from CSV and Parquet files into clean per-series arrays.

Inputs are files or directories; a directory stands for its ``*.csv`` and ``*.parquet``
files in name order (`iotad record` names its files so that this is time order, and never
gives a file being written one of these suffixes). Three layouts are recognised from the
header line (a Parquet file's column names):

- long: ``ts,device,metric,value`` (any column order; ``timestamp``/``time`` also name ts);
- NAB: ``timestamp,value``; the device is the file stem (or ``--device``), the metric "value";
- wide: a ts column plus one column per metric; the device comes from ``--device``.

A timestamp is epoch seconds, epoch milliseconds (any number above 1e11) or ISO 8601 (a
naive one is UTC); Parquet may also hold it as a timestamp column. Readings that cannot be
used are dropped and *counted by reason*, the same reasons for CSV and Parquet, never
silently: nothing here prints, the counts go into the training report.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np

from detector.engine.readings import series_key, valid_name

TS_COLUMNS = ("ts", "timestamp", "time")
# Above this a numeric timestamp is taken as milliseconds: 1e11 s is the year 5138, while
# 1e11 ms is 1973, so real data of either unit is never ambiguous.
MS_THRESHOLD = 1e11
PARQUET_SUFFIX = ".parquet"
INPUT_SUFFIXES = (".csv", PARQUET_SUFFIX)
_MISSING_TEXT = frozenset({"", "na", "n/a", "null", "none"})

# Drop reasons, one snake_case label each (the report's rows_dropped keys).
BAD_ROW = "bad_row"
BAD_TS = "bad_ts"
MISSING_VALUE = "missing_value"
BAD_VALUE = "bad_value"
NON_FINITE_VALUE = "non_finite_value"
DUPLICATE_TS = "duplicate_ts"


class DataError(Exception):
    """Input data cannot be used (missing file, bad header, bad name, nothing usable)."""


Series = dict[str, tuple[np.ndarray, np.ndarray]]
"""Series key ("device/metric") -> (epoch-second timestamps float64, values float64)."""


@dataclass
class LoadedData:
    """Readings of all input files, cleaned: sorted by time, no duplicates, all finite."""

    series: Series
    rows_total: int
    dropped: Counter[str] = field(default_factory=Counter)
    files: list[dict[str, object]] = field(default_factory=list)
    fingerprint: str = ""


def parse_ts(text: str) -> float | None:
    """Epoch seconds of `text` (epoch s, epoch ms or ISO 8601), or None when unparseable.

    >>> parse_ts("1700000000"), parse_ts("1700000000000"), parse_ts("1970-01-01 00:01:00")
    (1700000000.0, 1700000000.0, 60.0)
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            return None
        return number / 1000.0 if abs(number) > MS_THRESHOLD else number
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_value(text: str) -> tuple[float | None, str | None]:
    """``(value, None)`` for a usable reading, else ``(None, drop reason)``."""
    text = text.strip()
    if text.lower() in _MISSING_TEXT:
        return None, MISSING_VALUE
    try:
        value = float(text)
    except ValueError:
        return None, BAD_VALUE
    if not math.isfinite(value):
        return None, NON_FINITE_VALUE
    return value, None


def ts_of(raw: object) -> float | None:
    """Epoch seconds of a timestamp cell, CSV text or a typed (Parquet) value; None if unusable.

    Numbers follow `parse_ts` (seconds, or milliseconds above 1e11); a datetime without a
    zone is UTC.
    """
    if isinstance(raw, str):
        return parse_ts(raw)
    if isinstance(raw, datetime):
        moment = raw if raw.tzinfo is not None else raw.replace(tzinfo=UTC)
        return moment.timestamp()
    if raw is None or isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal)):
        return None
    number = float(raw)
    if not math.isfinite(number):
        return None
    return number / 1000.0 if abs(number) > MS_THRESHOLD else number


def value_of(raw: object) -> tuple[float | None, str | None]:
    """`parse_value` for a cell that is CSV text or a typed (Parquet) value."""
    if isinstance(raw, str):
        return parse_value(raw)
    if raw is None:
        return None, MISSING_VALUE
    if isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal)):
        return None, BAD_VALUE
    try:
        value = float(raw)
    except OverflowError:
        return None, NON_FINITE_VALUE
    if not math.isfinite(value):
        return None, NON_FINITE_VALUE
    return value, None


def _text(raw: object) -> str:
    return raw.strip() if isinstance(raw, str) else "" if raw is None else str(raw).strip()


def clean_series(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, Counter[str]]:
    """Drop non-finite readings, sort by time (stable) and keep the first of equal timestamps.

    Returns ``(ts, values, dropped)`` with float64 arrays and the drop counts by reason.
    """
    ts = np.asarray(ts, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if ts.shape != values.shape:
        raise DataError(f"timestamps ({ts.size}) and values ({values.size}) differ in length")
    dropped: Counter[str] = Counter()
    bad_ts = ~np.isfinite(ts)
    bad_value = ~np.isfinite(values) & ~bad_ts
    dropped[BAD_TS] += int(bad_ts.sum())
    dropped[NON_FINITE_VALUE] += int(bad_value.sum())
    keep = ~(bad_ts | bad_value)
    ts, values = ts[keep], values[keep]
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    first = np.ones(ts.size, dtype=bool)
    first[1:] = np.diff(ts) > 0
    dropped[DUPLICATE_TS] += int((~first).sum())
    return ts[first], values[first], +dropped


def _check_name(name: str, what: str, where: str) -> str:
    if not valid_name(name):
        raise DataError(
            f"{where}: {what} name {name!r} is not valid (1-64 characters of A-Za-z0-9_.-)"
        )
    return name


class _Collector:
    """Raw readings per series key, before sorting and de-duplication."""

    def __init__(self) -> None:
        self.ts: dict[str, list[float]] = {}
        self.values: dict[str, list[float]] = {}
        self.rows_total = 0
        self.dropped: Counter[str] = Counter()

    def add(self, key: str, ts: float, value: float) -> None:
        self.ts.setdefault(key, []).append(ts)
        self.values.setdefault(key, []).append(value)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n


Row = Sequence[object]


def _read_long(rows: Iterable[Row], header: list[str], where: str, out: _Collector) -> None:
    i_ts = next(header.index(c) for c in TS_COLUMNS if c in header)
    i_dev, i_met, i_val = header.index("device"), header.index("metric"), header.index("value")
    width = len(header)
    seen: set[str] = set()
    for line_no, row in enumerate(rows, start=2):
        if not row:
            continue  # blank line: not a reading
        out.rows_total += 1
        if len(row) != width:
            out.drop(BAD_ROW)
            continue
        device, metric = _text(row[i_dev]), _text(row[i_met])
        for name, what in ((device, "device"), (metric, "metric")):
            if name not in seen:
                _check_name(name, what, f"{where}:{line_no}")
                seen.add(name)
        ts = ts_of(row[i_ts])
        if ts is None:
            out.drop(BAD_TS)
            continue
        value, reason = value_of(row[i_val])
        if reason is not None:
            out.drop(reason)
            continue
        out.add(series_key(device, metric), ts, value)  # type: ignore[arg-type]


def _read_wide(
    rows: Iterable[Row], names: list[str], device: str, where: str, out: _Collector
) -> None:
    header = [name.lower() for name in names]
    i_ts = next(header.index(c) for c in TS_COLUMNS if c in header)
    metrics = [(i, name) for i, name in enumerate(names) if i != i_ts]
    for _, name in metrics:
        _check_name(name, "metric", f"{where}: header")
    keys = [(i, series_key(device, name)) for i, name in metrics]
    width = len(header)
    for row in rows:
        if not row:
            continue
        out.rows_total += len(keys)
        if len(row) != width:
            out.drop(BAD_ROW, len(keys))
            continue
        ts = ts_of(row[i_ts])
        if ts is None:
            out.drop(BAD_TS, len(keys))
            continue
        for i, key in keys:
            value, reason = value_of(row[i])
            if reason is not None:
                out.drop(reason)
            else:
                out.add(key, ts, value)  # type: ignore[arg-type]


def _read_table(
    names: list[str], rows: Iterable[Row], path: Path, device: str | None, out: _Collector
) -> None:
    """Readings of one file from its column names and rows, whatever the file format."""
    where = str(path)
    # Layout detection ignores case; metric names keep theirs.
    header = [name.lower() for name in names]
    has_ts = any(c in header for c in TS_COLUMNS)
    if has_ts and {"device", "metric", "value"} <= set(header):
        _read_long(rows, header, where, out)
    elif has_ts and len(header) == 2 and "value" in header:
        name = device if device is not None else path.stem
        _read_wide(rows, names, _check_name(name, "device", where), where, out)
    elif has_ts and len(header) >= 2 and len(set(header)) == len(header):
        if device is None:
            raise DataError(
                f"{where} is a wide {_kind(path)} (columns {', '.join(header)}): "
                "give the device name with --device"
            )
        _read_wide(rows, names, _check_name(device, "device", "--device"), where, out)
    else:
        raise DataError(
            f"{where}: bad {_kind(path)} header {','.join(header)!r}; expected "
            "'ts,device,metric,value', 'timestamp,value', or a ts column plus "
            "one column per metric (with --device)"
        )


def _kind(path: Path) -> str:
    return "Parquet" if path.suffix.lower() == PARQUET_SUFFIX else "CSV"


def _read_file(path: Path, device: str | None, out: _Collector) -> None:
    if path.suffix.lower() == PARQUET_SUFFIX:
        from training.parquet_data import read_parquet

        names, rows = read_parquet(path)
        _read_table(names, rows, path, device, out)
        return
    where = str(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        try:
            names = [h.strip() for h in next(rows)]
        except StopIteration:
            raise DataError(f"{where} is empty (expected a CSV header line)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{where} is not a readable CSV file: {exc}") from None
        try:
            _read_table(names, rows, path, device, out)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{where} is not a readable CSV file: {exc}") from None


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files of `paths`, a directory replaced by its ``*.csv`` and ``*.parquet`` files in
    name order (time order for `iotad record`'s); raises `DataError` for a missing path or a
    directory without such files."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in INPUT_SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
            if not found:
                raise DataError(f"directory {path} holds no .csv or .parquet files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input file {path} does not exist or is not a file")
    return files


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_files(paths: Sequence[str | Path], device: str | None = None) -> LoadedData:
    """Read and clean all readings of `paths` (readings of one series may span files).

    `paths` are CSV or Parquet files, or directories of them (`expand_inputs`).
    `device` names the device of wide and NAB files. Raises `DataError` with a one-line
    message for a missing or unreadable file, a bad header or an invalid name.
    """
    if not paths:
        raise DataError("no input files given")
    paths = expand_inputs(paths)
    out = _Collector()
    files: list[dict[str, object]] = []
    overall = hashlib.sha256()
    for raw in paths:
        path = Path(raw)
        before = out.rows_total
        try:
            sha = file_sha256(path)
            _read_file(path, device, out)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
        overall.update(sha.encode())
        files.append({"path": str(path), "sha256": sha, "rows": out.rows_total - before})
    series: Series = {}
    dropped = Counter(out.dropped)
    for key in sorted(out.ts):
        ts, values, lost = clean_series(np.array(out.ts[key]), np.array(out.values[key]))
        dropped.update(lost)
        series[key] = (ts, values)
    # With one file this is simply that file's SHA-256; with several, a hash of their hashes.
    fingerprint = files[0]["sha256"] if len(files) == 1 else overall.hexdigest()
    return LoadedData(series, out.rows_total, +dropped, files, str(fingerprint))


def series_fingerprint(series: Series) -> str:
    """SHA-256 over in-memory series (keys sorted), the `train_series` data fingerprint."""
    digest = hashlib.sha256()
    for key in sorted(series):
        ts, values = series[key]
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(ts, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def from_arrays(series: Series) -> LoadedData:
    """Clean in-memory series the same way files are (names checked, drops counted)."""
    out: Series = {}
    dropped: Counter[str] = Counter()
    rows_total = 0
    for key in sorted(series):
        device, sep, metric = key.partition("/")
        if not sep:
            raise DataError(f"series key {key!r} is not 'device/metric'")
        _check_name(device, "device", f"series {key!r}")
        _check_name(metric, "metric", f"series {key!r}")
        ts, values = series[key]
        rows_total += int(np.asarray(ts).size)
        ts, values, lost = clean_series(ts, values)
        dropped.update(lost)
        out[key] = (ts, values)
    return LoadedData(out, rows_total, +dropped, [], series_fingerprint(series))
