"""The two training plots: forecasts against actual values, and the loss curves.

Matplotlib runs with the Agg backend (files only, no display needed) and is imported inside
the functions so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

MAX_POINTS = 500
"""Validation readings drawn per series; more turns the plot into a solid band."""


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_forecasts(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    """Actual vs predicted on the validation split, one panel per series.

    `panels` holds ``(series key, timestamps, actual, predicted)`` in original units.
    """
    plt = _pyplot()
    n = max(1, len(panels))
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.6 * n), squeeze=False)
    for ax, (key, ts, actual, predicted) in zip(axes[:, 0], panels, strict=False):
        ts, actual, predicted = ts[-MAX_POINTS:], actual[-MAX_POINTS:], predicted[-MAX_POINTS:]
        hours = (ts - ts[0]) / 3600.0 if ts.size else ts
        ax.plot(hours, actual, label="actual", linewidth=1.0)
        ax.plot(hours, predicted, label="predicted", linewidth=1.0)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("hours into the plotted validation span")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle("Validation split: actual vs one-step forecast")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_loss(path: Path, loss: Sequence[float], val_loss: Sequence[float]) -> None:
    """Training and validation loss (MSE, scaled units) per epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(loss) + 1)
    ax.plot(epochs, loss, marker="o", label="training loss")
    if len(val_loss):
        ax.plot(np.arange(1, len(val_loss) + 1), val_loss, marker="o", label="validation loss")
        best = int(np.argmin(val_loss)) + 1
        ax.axvline(best, color="grey", linestyle="--", label=f"best epoch ({best}, kept)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled units)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Training and validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
