"""The factory benchmark's figures: pooled per model and kind, tables, JSON and CSV files.

Runs pool by summing: faults and alerts of every (shape, seed) of a model count once each,
and forecast RMSEs pool their squared errors. A failed run is in every pool (its faults
missed, no alerts) and named in the report.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.factory_eval import RunResult
from training.factory_match import Outcome, kind_scores, overall, per_kind
from training.factory_scenario import REGIMES

TARGETS: dict[str, tuple[str, float]] = {
    "recall": (">=", 0.95),
    "min_kind_recall": (">=", 0.8),
    "before_end": (">=", 0.9),
    "precision": (">=", 0.90),
    "false_alerts_per_series_day": ("<=", 0.05),
    "median_delay_readings": ("<=", 2.0),
    "rmse_ratio_vs_naive": ("<=", 0.8),
}
"""The issue's targets for the factory benchmark (3 seeds), and the LSTM's F1 above naive's."""


def _pool(results: Sequence[RunResult]) -> tuple[list[Outcome], list[int | None], float]:
    outcomes = [o for r in results for o in r.outcomes]
    matched = [m for r in results for m in r.matched]
    return outcomes, matched, sum(r.series_days for r in results)


def pooled_rmse(results: Sequence[RunResult], metric: str | None = None) -> dict[str, Any]:
    """RMSE of model, naive and seasonal-naive over the runs' readings together."""
    sse = {"model": 0.0, "naive": 0.0, "seasonal_naive": 0.0}
    n = 0
    for r in results:
        if r.rmse is None:
            continue
        row = r.rmse["pooled"] if metric is None else r.rmse["per_metric"][metric]
        if not row["readings"] or any(row[k] is None for k in sse):
            continue
        n += row["readings"]
        for k in sse:
            sse[k] += row[k] ** 2 * row["readings"]
    out: dict[str, Any] = {"readings": n}
    for k, total in sse.items():
        out[k] = math.sqrt(total / n) if n else None
    m, nv, sn = out["model"], out["naive"], out["seasonal_naive"]
    out["ratio_vs_naive"] = m / nv if n and nv else None
    out["ratio_vs_seasonal"] = m / sn if n and sn else None
    return out


def _by_regime(results: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """Detection of the faults that began in each regime (pooled over `results`)."""
    pairs = [
        (o, g)
        for r in results
        for o, g in zip(r.outcomes, r.regimes or ["unknown"] * len(r.outcomes), strict=True)
    ]
    return {g: kind_scores(o for o, x in pairs if x == g).to_dict() for g in REGIMES}


def _weighted(results: Sequence[RunResult], key: str) -> float | None:
    """The runs' `info[key]`, averaged with their series-days as weights."""
    pairs = [(r.info[key], r.series_days) for r in results if r.info.get(key) is not None]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def _false_by_context(results: Sequence[RunResult]) -> dict[str, int]:
    """False alerts counted by where they fired: near a start, stop or load change of the
    machine, or else by what it was doing."""
    counts = dict.fromkeys(("near_change", *REGIMES), 0)
    for r in results:
        for m, where in zip(
            r.matched, r.alert_contexts or ["unknown"] * len(r.matched), strict=True
        ):
            if m is None:
                counts[where] = counts.get(where, 0) + 1
    return counts


def _alerts_by_signal(results: Sequence[RunResult]) -> dict[str, dict[str, int]]:
    """Alerts counted by the signal that fired them: how many matched a fault, how many not."""
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        for a, m in zip(r.alerts, r.matched, strict=True):
            row = counts.setdefault(a.signal or "unknown", {"true": 0, "false": 0})
            row["false" if m is None else "true"] += 1
    return dict(sorted(counts.items()))


def summarize(results: Sequence[RunResult], kinds: Sequence[str]) -> dict[str, Any]:
    """Per model: the pooled headline, per-kind scores and RMSE; per run the same."""
    models = sorted({r.model for r in results}, key=["lstm", "naive"].index)
    metrics = sorted({m for r in results if r.rmse for m in r.rmse["per_metric"]})
    summary: dict[str, Any] = {"models": {}, "runs": [], "failed": {}}
    for model in models:
        mine = [r for r in results if r.model == model]
        outcomes, matched, series_days = _pool(mine)
        head = overall(outcomes, matched, series_days)
        by_kind = per_kind(outcomes, kinds)
        summary["models"][model] = {
            "overall": head.to_dict(),
            "min_kind_recall": min(
                (k.recall for k in by_kind.values() if k.recall is not None), default=None
            ),
            "kinds": {k: v.to_dict() for k, v in by_kind.items()},
            "rmse": {"pooled": pooled_rmse(mine), **{m: pooled_rmse(mine, m) for m in metrics}},
            "regimes": _by_regime(mine),
            "false_alerts_by_context": _false_by_context(mine),
            "alerts_by_signal": _alerts_by_signal(mine),
            "near_change_time_fraction": _weighted(mine, "near_change_time_fraction"),
            "runs": len(mine),
            "failed_runs": sum(r.error is not None for r in mine),
        }
    for r in results:
        head = overall(r.outcomes, r.matched, r.series_days)
        summary["runs"].append(
            {
                "shape": r.shape,
                "seed": r.seed,
                "model": r.model,
                "overall": head.to_dict(),
                "kinds": {k: v.to_dict() for k, v in per_kind(r.outcomes, kinds).items()},
                "rmse": r.rmse,
                "info": {k: v for k, v in r.info.items() if k != "traceback"},
                "error": r.error,
            }
        )
        if r.error is not None:
            summary["failed"][f"{r.shape}/seed{r.seed}/{r.model}"] = r.error
    return summary


# -- text -----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _kind_table(
    title: str,
    per_model: dict[str, dict[str, Any]],
    kinds: Sequence[str],
    section: str = "kinds",
) -> str:
    models = list(per_model)
    head = f"{section[:-1]:<13}" + "".join(f" | {m:^22}" for m in models)
    sub = f"{'':<13}" + "".join(
        f" | {'n':>3} {'recall':>6} {'<end':>5} {'delay':>5}" for _ in models
    )
    lines = [title, head, sub, "-" * len(sub)]
    for kind in [*kinds, "all"]:
        row = f"{kind:<13}"
        for m in models:
            k = per_model[m]["overall"] if kind == "all" else per_model[m][section][kind]
            row += (
                f" | {k['faults']:>3} {_f(k['recall']):>6} {_f(k['before_end']):>5} "
                f"{_f(k['median_delay_readings'], 1):>5}"
            )
        lines.append(row)
    return "\n".join(lines)


def _headline_rows(per_model: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for model, s in per_model.items():
        o = s["overall"]
        rows.append(
            (
                model,
                {
                    "recall": o["recall"],
                    "min_kind_recall": s.get("min_kind_recall"),
                    "before_end": o["before_end"],
                    "precision": o["precision"],
                    "false_alerts_per_series_day": o["false_alerts_per_series_day"],
                    "median_delay_readings": o["median_delay_readings"],
                    "f1": o["f1"],
                    "alerts": o["alerts"],
                    "rmse_ratio_vs_naive": s["rmse"]["pooled"]["ratio_vs_naive"],
                    "rmse_ratio_vs_seasonal": s["rmse"]["pooled"]["ratio_vs_seasonal"],
                },
            )
        )
    return rows


def _met(name: str, value: float | None, model: str) -> str:
    if name not in TARGETS or value is None or (model == "naive" and name.startswith("rmse")):
        return ""
    op, target = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target
    return "ok" if ok else "MISS"


def headline_table(per_model: dict[str, dict[str, Any]]) -> str:
    """Measured figures per model beside the issue's targets."""
    rows = _headline_rows(per_model)
    names = list(rows[0][1]) if rows else []
    lines = [f"{'figure':<30} {'target':>10}" + "".join(f" {m:>14}" for m, _ in rows)]
    for name in names:
        op, target = TARGETS.get(name, ("", math.nan))
        tgt = f"{op}{target:g}" if op else ""
        if name == "f1":
            tgt = "lstm>naive"
        line = f"{name:<30} {tgt:>10}"
        for model, figures in rows:
            value = figures[name]
            text = str(value) if name == "alerts" else _f(value, 3)
            line += f" {text + ' ' + _met(name, value, model):>14}"
        lines.append(line)
    f1 = {model: figures["f1"] for model, figures in rows}
    if {"lstm", "naive"} <= set(f1):
        better = "ok" if f1["lstm"] > f1["naive"] else "MISS"
        lines.append(f"lstm F1 above naive's: {f1['lstm']:.3f} vs {f1['naive']:.3f} {better}")
    return "\n".join(lines)


def rmse_table(per_model: dict[str, dict[str, Any]]) -> str:
    """Forecast RMSE (units of each series' history std) per metric and pooled."""
    lines = [
        f"{'model':<6} {'metric':<12} {'readings':>9} {'model':>7} {'naive':>7} "
        f"{'seasonal':>8} {'vs naive':>8} {'vs seas.':>8}"
    ]
    for model, s in per_model.items():
        for metric, row in s["rmse"].items():
            lines.append(
                f"{model:<6} {metric:<12} {row['readings']:>9} {_f(row['model'], 4):>7} "
                f"{_f(row['naive'], 4):>7} {_f(row['seasonal_naive'], 4):>8} "
                f"{_f(row['ratio_vs_naive'], 3):>8} {_f(row['ratio_vs_seasonal'], 3):>8}"
            )
    return "\n".join(lines)


def report_text(summary: dict[str, Any], kinds: Sequence[str]) -> str:
    """Tables per run, the pooled tables, the headline against the targets, failures."""
    parts = []
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for run in summary["runs"]:
        runs.setdefault((run["shape"], run["seed"]), {})[run["model"]] = run
    for (shape, seed), per_model in runs.items():
        parts.append(_kind_table(f"== {shape}, seed {seed}", per_model, kinds))
        for model, run in per_model.items():
            o = run["overall"]
            rm = (run["rmse"] or {}).get("pooled", {})
            parts[-1] += (
                f"\n   {model}: {o['alerts']} alerts, {o['false_alerts']} false; precision "
                f"{_f(o['precision'])}, {_f(o['false_alerts_per_series_day'], 3)} false/series/"
                f"day, F1 {_f(o['f1'])}; RMSE vs naive {_f(rm.get('ratio_vs_naive'), 3)}"
                + (f"  FAILED: {run['error']}" if run["error"] else "")
            )
    per_model = summary["models"]
    n_runs = max((s["runs"] for s in per_model.values()), default=0)
    parts.append(_kind_table(f"== all runs pooled ({n_runs} per model)", per_model, kinds))
    parts.append(
        _kind_table(
            "== by what the machine was doing when the fault began (pooled)",
            per_model,
            REGIMES,
            "regimes",
        )
    )
    contexts = "\n".join(
        f"  {model}: "
        + ", ".join(f"{k} {v}" for k, v in s["false_alerts_by_context"].items())
        + f" (near a change: {_f(s['near_change_time_fraction'], 3)} of the machine-time)"
        for model, s in per_model.items()
    )
    parts.append(
        "== false alerts by where they fired (near_change: within 15 readings of a start, "
        f"stop or load change of the machine)\n{contexts}"
    )
    signals = "\n".join(
        f"  {model}: "
        + ", ".join(
            f"{k} {v['true']}/{v['true'] + v['false']}"
            for k, v in s.get("alerts_by_signal", {}).items()
        )
        for model, s in per_model.items()
    )
    parts.append("== alerts by the signal that fired them (matched a fault / all)\n" + signals)
    parts.append("== headline (pooled) against the issue's targets\n" + headline_table(per_model))
    parts.append("== forecast RMSE on fault-free stream readings\n" + rmse_table(per_model))
    if summary["failed"]:
        failed = "\n".join(f"  {k}: {v}" for k, v in summary["failed"].items())
        parts.append("== FAILED runs (counted as no detections)\n" + failed)
    legend = (
        "n: faults; recall: faults alerted within [start, end + grace]; <end: fraction of faults "
        "alerted before they ended; delay: median readings from a fault's first reading to "
        "its first alert"
    )
    return "\n\n".join([*parts, legend])


# -- files ----------------------------------------------------------------------------------

FAULT_COLUMNS = (
    *("shape", "seed", "model", "kind", "device", "metric", "start_ts", "end_ts", "magnitude"),
    *("period_s", "regime", "detected", "first_alert_ts", "delay_readings", "before_end"),
)


def write_outputs(out: Path, summary: dict[str, Any], results: Sequence[RunResult]) -> None:
    """``summary.json``, ``faults.csv`` (one row per fault and model), ``alerts.csv`` (one
    row per alert), ``kinds.csv`` (per run and kind) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    with open(out / "faults.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(FAULT_COLUMNS)
        for r in results:
            for o, regime in zip(r.outcomes, r.regimes or [""] * len(r.outcomes), strict=True):
                f = o.fault
                where = [r.shape, r.seed, r.model, f.kind, f.device, f.metric]
                what = [f.start_ts, f.end_ts, f"{f.magnitude:.6g}", f.period_s, regime]
                found = [int(o.detected), o.first_alert_ts, o.delay_readings, int(o.before_end)]
                w.writerow([*where, *what, *found])
    with open(out / "alerts.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                *("shape", "seed", "model", "device", "metric", "ts", "score", "signal"),
                *("fault_kind", "context"),
            ]
        )
        for r in results:
            contexts = r.alert_contexts or [""] * len(r.alerts)
            for a, m, context in zip(r.alerts, r.matched, contexts, strict=True):
                kind = r.faults[m].kind if m is not None else ""
                row = [r.shape, r.seed, r.model, a.device, a.metric, a.ts, a.score, a.signal]
                row += [kind, context]
                w.writerow(row)
    with open(out / "kinds.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        cols = ["faults", "detected", "recall", "before_end", "median_delay_readings"]
        w.writerow(["shape", "seed", "model", "kind", *cols])
        for run in summary["runs"]:
            for kind, k in [*run["kinds"].items(), ("all", run["overall"])]:
                w.writerow([run["shape"], run["seed"], run["model"], kind, *(k[c] for c in cols)])
