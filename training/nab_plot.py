"""A picture of one replayed NAB file: values, the core's expected band, scores and windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.nab import Corpus
from training.nab_replay import SCORED
from training.nab_report import read_detail_csv


def plot_file(
    detail_csv: Path,
    corpus: Corpus,
    name: str,
    png: Path,
    thresholds: dict[str, float],
) -> Path:
    """Draw `name`'s detail CSV into `png` and return its path.

    Top: the values, the core's expected value and band, probation shaded grey, NAB's label
    windows shaded red and labels as dashed lines. Bottom: NAB anomaly scores with the
    `thresholds` (label -> value) drawn across.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    d = read_detail_csv(detail_csv)
    t = d["timestamp"]
    scored = d["status"] == SCORED
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    band = np.where(scored, 1.0, np.nan)
    top.fill_between(
        t, d["lower"] * band, d["upper"] * band, color="tab:blue", alpha=0.18, label="band"
    )
    top.plot(t, d["expected"] * band, color="tab:blue", lw=0.6, alpha=0.8, label="expected")
    top.plot(t, d["value"], color="black", lw=0.6, label="value")
    flagged = scored & (d["is_anomaly"] > 0)
    top.scatter(t[flagged], d["value"][flagged], s=8, color="tab:orange", zorder=3, label="core")
    probation = d["status"] == 0
    if probation.any():
        last = t[np.flatnonzero(probation)[-1]]
        for ax in (top, bottom):
            ax.axvspan(t[0], last, color="grey", alpha=0.15, lw=0)
    for start, end in corpus.windows.get(name, []):
        for ax in (top, bottom):
            ax.axvspan(_dt(start), _dt(end), color="tab:red", alpha=0.12, lw=0)
    for label_ts in corpus.labels.get(name, []):
        top.axvline(_dt(label_ts), color="tab:red", ls="--", lw=0.8)
    bottom.plot(t, d["anomaly_score"], color="tab:purple", lw=0.6)
    colours = iter(("tab:green", "tab:orange", "tab:brown", "tab:olive"))
    for label, value in thresholds.items():
        bottom.axhline(value, color=next(colours, "grey"), lw=0.8, ls=":", label=label)
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("anomaly_score")
    top.set_ylabel("value")
    top.set_title(f"{name}  (grey: probation, red: NAB windows)")
    top.legend(loc="upper left", fontsize=8, ncols=5)
    if thresholds:
        bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _dt(epoch_s: float) -> np.datetime64:
    return np.datetime64(round(epoch_s), "s")
