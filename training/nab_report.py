"""What `iotad eval nab` writes: per-file CSVs, ``summary.json`` and the console tables.

Layout under the output folder::

    <category>/<name>.csv          timestamp,value,anomaly_score (NAB's results format)
    detail/<category>/<name>.csv   the same rows plus the core's raw output, for plots/tuning
    summary.json                   scores per profile (optimised and fixed threshold),
                                   per category and per file, and how the run was made
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from training.nab import GroupScore, Result

DETAIL_COLUMNS = (
    "timestamp",
    "value",
    "anomaly_score",
    "core_score",
    "expected",
    "lower",
    "upper",
    "is_anomaly",
    "status",
)


def format_timestamps(ts: np.ndarray) -> list[str]:
    """Epoch seconds back to NAB's ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    stamps = np.datetime_as_string(np.round(ts).astype("datetime64[s]"), unit="s")
    return [s.replace("T", " ") for s in stamps.tolist()]


def _num(x: float) -> str:
    """Shortest round-tripping text of a float; empty for NaN (no value)."""
    return "" if x != x else repr(float(x))


def nab_csv_path(out: Path, name: str) -> Path:
    return out / name


def detail_csv_path(out: Path, name: str) -> Path:
    return out / "detail" / name


def write_file_csvs(out: Path, replay: Any) -> None:
    """Write the NAB results CSV and the detail CSV of one `FileReplay`, in input row order."""
    stamps = format_timestamps(replay.timestamps)
    nab_path, detail_path = nab_csv_path(out, replay.name), detail_csv_path(out, replay.name)
    nab_path.parent.mkdir(parents=True, exist_ok=True)
    detail_path.parent.mkdir(parents=True, exist_ok=True)
    with open(nab_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("timestamp", "value", "anomaly_score"))
        for t, v, s in zip(stamps, replay.values, replay.anomaly_score, strict=True):
            w.writerow((t, _num(v), _num(s)))
    columns = [replay.values, replay.anomaly_score, replay.core_score, replay.expected]
    columns += [replay.lower, replay.upper]
    with open(detail_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(DETAIL_COLUMNS)
        for i, t in enumerate(stamps):
            w.writerow(
                (t, *(_num(c[i]) for c in columns), int(replay.is_anomaly[i]), replay.status[i])
            )


def read_detail_csv(path: Path) -> dict[str, np.ndarray]:
    """Read a detail CSV back: ``timestamp`` as datetime64[s], the rest as float64."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    cols: dict[str, np.ndarray] = {}
    for j, col in enumerate(header):
        raw = [r[j] for r in rows]
        if col == "timestamp":
            cols[col] = np.array(raw, dtype="datetime64[s]")
        else:
            cols[col] = np.array([float(x) if x else np.nan for x in raw])
    return cols


# --- summary.json ---------------------------------------------------------------------------


def _group_dict(g: GroupScore) -> dict[str, Any]:
    return {"score": g.score, "raw": g.raw, "null": g.null, "perfect": g.perfect, **asdict(g.tally)}


def result_dict(r: Result) -> dict[str, Any]:
    """A `Result` as plain JSON-able data."""
    return {
        "threshold": r.threshold,
        "optimised": r.optimised,
        **_group_dict(r.corpus),
        "per_category": {c: _group_dict(g) for c, g in r.per_category.items()},
        "per_file": {n: _group_dict(g) for n, g in r.per_file.items()},
    }


def write_summary(
    path: Path,
    optimised: dict[str, Result],
    fixed: dict[str, Result],
    run: dict[str, Any],
    files: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Write ``summary.json``: per profile the optimised and the fixed-threshold result."""
    doc = {
        "benchmark": "NAB v1.1",
        "run": run,
        "profiles": {
            p: {"optimised": result_dict(optimised[p]), "fixed": result_dict(fixed[p])}
            for p in optimised
        },
        "files": files,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return doc


# --- console tables -------------------------------------------------------------------------


def _score_cell(g: GroupScore) -> str:
    # A group without windows has no normalised score; its raw score (FP cost) is shown.
    return f"{g.score:7.2f}" if g.score is not None else f"({g.raw:5.2f})"


def _found_cell(g: GroupScore) -> str:
    total = g.tally.windows_detected + g.tally.windows_missed
    return f"{g.tally.windows_detected}/{total}" if total else "-"


def profile_table(opt: Result, fixed: Result, n_files: dict[str, int]) -> str:
    """One profile's table: a row per category and one for all files; optimised | fixed."""
    head = (
        f"{opt.profile}: optimised threshold {opt.threshold:.6g} | "
        f"fixed threshold {fixed.threshold:.6g}"
    )
    cols = f"{'category':<24}{'files':>6}  {'score':>7} {'found':>7} {'FP rows':>8}  |"
    cols += f"  {'score':>7} {'found':>7} {'FP rows':>8}"
    lines = [head, cols, "-" * len(cols)]

    def row(label: str, files: int, a: GroupScore, b: GroupScore) -> str:
        return (
            f"{label:<24}{files:>6}  {_score_cell(a):>7} {_found_cell(a):>7} "
            f"{a.tally.fp_rows:>8}  |  {_score_cell(b):>7} {_found_cell(b):>7} {b.tally.fp_rows:>8}"
        )

    for category, g in opt.per_category.items():
        lines.append(row(category, n_files.get(category, 0), g, fixed.per_category[category]))
    lines.append("-" * len(cols))
    lines.append(row("all", sum(n_files.values()), opt.corpus, fixed.corpus))
    return "\n".join(lines)


def report_text(optimised: dict[str, Result], fixed: dict[str, Result]) -> str:
    """All profiles' tables, then a one-line headline per profile."""
    any_result = next(iter(optimised.values()))
    n_files: dict[str, int] = {}
    for name in any_result.per_file:
        category = name.split("/", 1)[0]
        n_files[category] = n_files.get(category, 0) + 1
    parts = [profile_table(optimised[p], fixed[p], n_files) for p in optimised]
    headline = ["NAB score (optimised / fixed threshold):"]
    for p in optimised:
        a, b = optimised[p].score, fixed[p].score
        headline.append(
            f"  {p:<20} {'-' if a is None else f'{a:.2f}':>7} / {'-' if b is None else f'{b:.2f}'}"
        )
    return "\n\n".join([*parts, "\n".join(headline)])
