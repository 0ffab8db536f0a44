"""What ``iotad eval nab --cv K`` prints and writes (``cv.json``).

The headline is out-of-fold; in-sample stands beside it, labelled. Per model: the
procedures' scores at the swept and at the default (the variant's own core) threshold, the
variant each fold chose, and per tuned knob whether its NAB gain survives cross-validation.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training import nab_grid
from training.nab_cv import Outcome, in_sample, out_of_fold

PROFILES = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}
MODE_LABEL = {"swept": "swept", "fixed": "default"}
HEADLINE = ("defaults", "grid", "simple")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def headline_table(runs: dict[str, dict[str, Any]]) -> str:
    """Per model and procedure: out-of-fold | in-sample for every profile, both thresholds."""
    cols = "".join(f"  {label:>15}" for label in PROFILES.values())
    lines = [
        f"{'model':<7}{'procedure':<10}{'threshold':<10}{cols}",
        f"{'':<27}" + "".join(f"  {'OOF':>7}{'in-smp':>8}" for _ in PROFILES),
    ]
    for model, cv in runs.items():
        for name in HEADLINE:
            proc = cv["procedures"].get(name)
            if proc is None:
                continue
            for mode in ("swept", "fixed"):
                cells = ""
                for profile in PROFILES:
                    res = proc[profile][mode]
                    oof, ins = res["out_of_fold"].score, res["in_sample"].score
                    cells += f"  {_num(oof):>7}{_num(ins):>8}"
                lines.append(f"{model:<7}{name:<10}{MODE_LABEL[mode]:<10}{cells}")
    return "\n".join(lines)


def chosen_table(cv: dict[str, Any], procedure: str = "grid") -> str:
    """The variant (and threshold) each fold chose, standard profile, both thresholds."""
    proc = cv["procedures"].get(procedure)
    if proc is None:
        return ""
    lines = []
    for mode in ("swept", "fixed"):
        oof = proc["standard"][mode]["out_of_fold"]
        lines.append(f"  {MODE_LABEL[mode]} threshold (standard):")
        for j, (name, t) in enumerate(zip(oof.chosen, oof.thresholds, strict=True)):
            lines.append(f"    fold {j}: {name}  (threshold {t:.6g})")
        ins = proc["standard"][mode]["in_sample"]
        lines.append(f"    in-sample: {ins.chosen[0]}  (threshold {ins.thresholds[0]:.6g})")
    return "\n".join(lines)


def knob_rows(cv: dict[str, Any]) -> list[dict[str, Any]]:
    """Per tuned knob: in-sample and out-of-fold gains of its default over its simple value,
    and of choosing it by CV over its simple value (standard profile unless said)."""
    procs = cv["procedures"]
    rows = []
    for knob in nab_grid.KNOBS:
        chosen = procs.get(f"knob:{knob.name}")
        if chosen is None:
            continue
        base = procs.get(f"knob:{knob.name}=simple", procs["defaults"])
        row: dict[str, Any] = {"knob": knob.name, "default": knob.default, "simple": knob.simple}
        for profile in PROFILES:
            for mode in ("swept", "fixed"):
                d, b, c = (
                    procs["defaults"][profile][mode],
                    base[profile][mode],
                    chosen[profile][mode],
                )
                key = f"{profile}/{mode}"
                row[key] = {
                    "in_sample_default_vs_simple": _delta(
                        d["in_sample"].score, b["in_sample"].score
                    ),
                    "oof_default_vs_simple": _delta(d["out_of_fold"].score, b["out_of_fold"].score),
                    "oof_cv_choice_vs_simple": _delta(
                        c["out_of_fold"].score, b["out_of_fold"].score
                    ),
                    "cv_choice_per_fold": c["out_of_fold"].chosen,
                }
        # The honest test of a tuned knob is the tuning itself, cross-validated: does choosing
        # it on the other folds beat its simple value on the held-out ones?
        cv_gain = row["standard/swept"]["oof_cv_choice_vs_simple"]
        row["survives"] = bool(cv_gain is not None and cv_gain > 0)
        rows.append(row)
    return rows


def knob_table(cv: dict[str, Any]) -> str:
    head = (
        f"{'knob':<20}{'default':>8}{'simple':>8}  {'in-smp Δ':>9}{'OOF Δ':>8}{'OOF Δ CV':>9}"
        f"  {'dflt-thr OOF Δ':>14}  verdict"
    )
    lines = [head]
    for row in knob_rows(cv):
        s, f = row["standard/swept"], row["standard/fixed"]
        verdict = "survives" if row["survives"] else "does not survive"
        if row["default"] == row["simple"]:
            verdict = "choosing it gains" if row["survives"] else "no gain from choosing it"
        lines.append(
            f"{row['knob']:<20}{_short(row['default']):>8}{_short(row['simple']):>8}  "
            f"{_num(s['in_sample_default_vs_simple']):>9}{_num(s['oof_default_vs_simple']):>8}"
            f"{_num(s['oof_cv_choice_vs_simple']):>9}  {_num(f['oof_default_vs_simple']):>14}"
            f"  {verdict}"
        )
    return "\n".join(lines)


def _short(value: Any) -> str:
    return "off" if value is None else str(value)


def report_text(runs: dict[str, dict[str, Any]]) -> str:
    """The console report of one or more models' CV runs."""
    any_cv = next(iter(runs.values()))
    n_files = len(any_cv["folds"])
    parts = [
        f"NAB v1.1, {any_cv['k']}-fold cross-validation by file (stratified by category, "
        f"seed {any_cv['seed']}), {n_files} files, grid {any_cv['grid']!r} "
        f"({len(any_cv['variants'])} variants)",
        "OOF: out-of-fold, each fold scored with what the other folds chose (the headline). "
        "in-smp: in-sample, chosen and scored on all files. swept: NAB's threshold chosen "
        "per profile; default: the variant's own core threshold.",
        headline_table(runs),
    ]
    for model, cv in runs.items():
        failed = cv["failed"]
        parts.append(
            f"{model}: failed files (scored as no detections): "
            + (", ".join(f"{n} ({e})" for n, e in failed.items()) if failed else "none")
            + f"; defaults' multi-file replay vs per-file replay: max |diff| "
            f"{cv['replay_check_max_abs_diff']:.3g}"
        )
        table = chosen_table(cv)
        if table:
            parts.append(f"{model}: what the grid procedure chose\n{table}")
        knobs = knob_table(cv)
        if knobs.count("\n"):
            parts.append(
                f"{model}: tuned knobs, standard profile. in-smp Δ: default minus simple value, "
                "in-sample; OOF Δ: the same out-of-fold (threshold chosen per fold); OOF Δ CV: "
                "the knob chosen per fold among its values, minus simple\n" + knobs
            )
    return "\n\n".join(parts)


def _outcome_dict(o: Outcome) -> dict[str, Any]:
    return asdict(o)


def cv_doc(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """JSON-able data of the CV runs: procedures, knobs, and every variant's own scores."""
    doc: dict[str, Any] = {}
    for model, cv in runs.items():
        per_variant = {}
        for name, v in cv["scored"].items():
            per_variant[name] = {
                p: {
                    mode: {
                        "out_of_fold": out_of_fold([v], cv["folds"], cv["bounds"], p, mode).score,
                        "in_sample": in_sample([v], cv["bounds"], p, mode).score,
                    }
                    for mode in ("swept", "fixed")
                }
                for p in PROFILES
            }
        doc[model] = {
            **{k: cv[k] for k in cv if k not in ("procedures", "scored", "bounds", "variants")},
            "procedures": {
                name: {
                    p: {m: {w: _outcome_dict(o) for w, o in r.items()} for m, r in pr.items()}
                    for p, pr in proc.items()
                }
                for name, proc in cv["procedures"].items()
            },
            "knobs": knob_rows(cv),
            "variants": per_variant,
            "variant_names": cv["variants"],
        }
    return doc


def write_cv_json(path: Path, runs: dict[str, dict[str, Any]]) -> None:
    """``cv.json`` (the report's data) and beside it ``cv_scores.json.gz``: every variant's
    per-file tallies and the files' bounds, enough to re-run any choice without replaying."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(cv_doc(runs), indent=1, allow_nan=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")
    raw = {
        model: {
            "folds": cv["folds"],
            "bounds": asdict(cv["bounds"]),
            "variants": {n: asdict(v) for n, v in cv["scored"].items()},
        }
        for model, cv in runs.items()
    }
    with gzip.open(path.with_name("cv_scores.json.gz"), "wt", encoding="utf-8") as f:
        json.dump(raw, f, allow_nan=False)
