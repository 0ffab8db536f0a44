"""The arithmetic of NAB v1.1 scoring: per-row weights, the threshold sweep, fixed thresholds.

Pure numpy, no file I/O: `training/nab.py` loads the corpus and calls these. The rules follow
NAB v1.1's sweeper (numenta/NAB ``nab/sweeper.py``), re-derived here in vectorised form:

* each scorable row (past the probationary period) gets a *sweep weight*: inside a window
  ``tp_weight * S(-(right - i + 1) / width) / S(-1)``, so the window's first row earns exactly
  `tp_weight` and its last one a little above 0; outside every window
  ``fp_weight * S(|i - prev_right| / (prev_width - 1))``, or ``-fp_weight`` before any window;
  ``S(x) = 2 * sigmoid(-5x) - 1``, and -1 for ``x > 3``;
* at a threshold t a row is a detection when its score >= t; a window counts the weight of
  its first detection (the largest, since weights fall along a window) or ``-fn_weight`` when
  nothing in it is detected; false positives add their (negative) weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750


@dataclass(frozen=True, slots=True)
class CostMatrix:
    """One NAB application profile's weights."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


def probation_rows(n_rows: int) -> int:
    """Rows at the start of a file that NAB never scores: 15% of the file, at most 750."""
    # Same float expression as NAB, so files whose 15% is fractional round identically.
    return int(min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS))


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """NAB's reward curve: ``2 * sigmoid(-5x) - 1``, flat at -1 beyond ``x > 3``."""
    x = np.asarray(x, dtype=np.float64)
    # exp overflows to inf for large x, which still gives the right limit (-1) without a warning.
    with np.errstate(over="ignore"):
        s = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, s)


_MAX_TP = float(scaled_sigmoid(np.array(-1.0)))


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """The scorable rows of one file, reduced to what the sweep needs (profile independent).

    `scores` are the detector's scores of rows past probation; `window` is the index of the
    window (within this file) holding each row, -1 outside; `shape` is the unweighted reward
    (in a window, ``S(...) / S(-1)`` in (0, 1]) or penalty (outside, in [-1, 0)).
    `n_windows` counts windows with at least one scorable row; `n_windows_total` all of them.
    """

    name: str
    scores: np.ndarray
    window: np.ndarray
    shape: np.ndarray
    n_windows: int
    n_windows_total: int

    def weights(self, cost: CostMatrix) -> np.ndarray:
        """Each scorable row's sweep weight under `cost`."""
        inside = self.window >= 0
        return np.where(inside, cost.tp_weight, cost.fp_weight) * self.shape


def prepare_file(
    name: str, n_rows: int, scores: np.ndarray, window_rows: list[tuple[int, int]]
) -> PreparedFile:
    """Compute the scorable rows of a file of `n_rows` rows.

    `window_rows` holds each window's first and last row index (inclusive), sorted and
    disjoint. Windows' parts inside the probationary period are not scored; a window that
    lies wholly inside it disappears, as in NAB.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n_rows,):
        raise ValueError(f"{name}: {scores.shape[0]} scores for {n_rows} rows")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name}: anomaly scores must be finite numbers")
    idx = np.arange(n_rows)
    window = np.full(n_rows, -1, dtype=np.int64)
    shape = np.full(n_rows, -1.0)  # before any window: the full false-positive cost
    prev_end = -1
    for k, (start, end) in enumerate(window_rows):
        if not 0 <= start <= end < n_rows or start <= prev_end:
            raise ValueError(f"{name}: windows must be sorted, disjoint and inside the file")
        width = end - start + 1
        window[start : end + 1] = k
        shape[start : end + 1] = scaled_sigmoid(-(end - idx[start : end + 1] + 1) / width) / _MAX_TP
        # Rows after this window (until the next one) are penalised by distance from its end.
        # NAB divides by (width - 1); a one-row window would divide by zero, so use 1 there.
        stop = window_rows[k + 1][0] if k + 1 < len(window_rows) else n_rows
        after = idx[end + 1 : stop]
        shape[end + 1 : stop] = scaled_sigmoid((after - end) / max(width - 1, 1))
        prev_end = end
    first = probation_rows(n_rows)
    kept_windows = window[first:]
    return PreparedFile(
        name=name,
        scores=scores[first:],
        window=kept_windows,
        shape=shape[first:],
        n_windows=len(np.unique(kept_windows[kept_windows >= 0])),
        n_windows_total=len(window_rows),
    )


@dataclass(frozen=True, slots=True)
class Tally:
    """Raw NAB score of some files at one threshold, with its detection counts.

    Row counts are NAB's (`tp_rows`: detected rows inside windows, and so on); window counts
    say how many windows had a detection (`windows_detected`) or none (`windows_missed`).
    """

    raw: float
    tp_rows: int
    fp_rows: int
    fn_rows: int
    tn_rows: int
    windows_detected: int
    windows_missed: int


def score_at(prepared: PreparedFile, cost: CostMatrix, threshold: float) -> Tally:
    """Raw NAB score of one file when a detection is a row with score >= `threshold`."""
    detected = prepared.scores >= threshold
    inside = prepared.window >= 0
    weights = prepared.weights(cost)
    raw = float(weights[detected & ~inside].sum())
    windows_detected = 0
    for k in np.unique(prepared.window[inside]):
        hits = np.flatnonzero(detected & (prepared.window == k))
        if hits.size:
            raw += float(weights[hits[0]])  # rows are in time order: the first detection counts
            windows_detected += 1
        else:
            raw -= cost.fn_weight
    return Tally(
        raw=raw,
        tp_rows=int(np.sum(detected & inside)),
        fp_rows=int(np.sum(detected & ~inside)),
        fn_rows=int(np.sum(~detected & inside)),
        tn_rows=int(np.sum(~detected & ~inside)),
        windows_detected=windows_detected,
        windows_missed=prepared.n_windows - windows_detected,
    )


@dataclass(frozen=True, slots=True)
class Sweep:
    """Raw corpus score for every candidate threshold, highest threshold first.

    ``thresholds[0]`` is above every score (nothing detected); each further entry is one
    distinct score value, where every row with a score >= it is a detection.
    """

    thresholds: np.ndarray
    raw: np.ndarray
    tp_rows: np.ndarray
    fp_rows: np.ndarray
    windows_detected: np.ndarray

    def best(self) -> int:
        """Index of the best threshold; among equal scores the highest threshold, as NAB."""
        return int(np.argmax(self.raw))


def sweep(files: list[PreparedFile], cost: CostMatrix) -> Sweep:
    """Score `files` together at every distinct score value in one pass over sorted scores.

    Rows are sorted by score once (descending). Lowering the threshold past a row adds its
    weight if it is a false positive; if it is in a window it lifts that window's value to the
    row's weight when that beats the window's best so far (initially ``-fn_weight``). The sum
    of those increments, cumulated along the sorted order, is the score at every threshold.
    """
    if not files:
        files = [PreparedFile("", np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0), 0, 0)]
    scores = np.concatenate([f.scores for f in files])
    weights = np.concatenate([f.weights(cost) for f in files])
    # Windows are numbered per file; offset them so that each has a corpus-wide id.
    offsets = np.cumsum([0] + [f.n_windows_total for f in files])[:-1]
    window = np.concatenate(
        [np.where(f.window >= 0, f.window + off, -1) for f, off in zip(files, offsets, strict=True)]
    )
    n_windows = sum(f.n_windows for f in files)
    base = -cost.fn_weight * n_windows

    order = np.argsort(-scores, kind="stable")
    s_sorted, w_sorted, win_sorted = scores[order], weights[order], window[order]
    inside = win_sorted >= 0
    increments = np.where(inside, 0.0, w_sorted)
    first_hit = np.zeros(len(order), dtype=np.int64)

    # Group the in-window positions by window, keeping the descending-score order inside each.
    pos = np.flatnonzero(inside)
    by_window = pos[np.argsort(win_sorted[pos], kind="stable")]
    bounds = np.flatnonzero(np.diff(win_sorted[by_window])) + 1
    for group in np.split(by_window, bounds) if by_window.size else []:
        best = np.maximum(np.maximum.accumulate(w_sorted[group]), -cost.fn_weight)
        increments[group] = np.diff(best, prepend=-cost.fn_weight)
        first_hit[group[0]] = 1

    if not len(order):
        zero = np.zeros(1, dtype=np.int64)
        return Sweep(np.array([1.1]), np.array([base]), zero, zero, zero)
    # The last row of each run of equal scores closes that threshold's state.
    ends = np.append(np.flatnonzero(np.diff(s_sorted) != 0), len(order) - 1)
    top = max(1.1, float(np.nextafter(s_sorted[0], np.inf)))
    return Sweep(
        thresholds=np.concatenate([[top], s_sorted[ends]]),
        raw=np.concatenate([[base], base + np.cumsum(increments)[ends]]),
        tp_rows=np.concatenate([[0], np.cumsum(inside)[ends]]),
        fp_rows=np.concatenate([[0], np.cumsum(~inside)[ends]]),
        windows_detected=np.concatenate([[0], np.cumsum(first_hit)[ends]]),
    )
