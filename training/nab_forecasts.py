"""Recorded forecasts: fit a file's forecaster once, replay its core under many settings.

A forecaster's output depends on its input windows only, never on `DetectionConfig`: the
windows are the file's scaled readings, which the core admits whatever its settings. So a
file's forecasts are recorded once, during its first replay (`RecordingForecaster`), and
later replays of the core under other settings read them back (`CachedForecaster`) instead
of running the model. The playback is exact: every window gets the very number the model
gave it, in the order it gave them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.engine.forecaster import Forecaster


@dataclass(frozen=True, slots=True)
class ForecastTable:
    """Every window a file's replay sent to the forecaster, and its forecast, in call order."""

    windows: np.ndarray  # (N, window_len, features) float32
    forecasts: np.ndarray  # (N,) float32

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, windows=self.windows, forecasts=self.forecasts)

    @classmethod
    def load(cls, path: Path) -> ForecastTable:
        with np.load(path) as z:
            return cls(z["windows"], z["forecasts"])

    def keys(self) -> list[bytes]:
        return [row.tobytes() for row in self.windows]


class RecordingForecaster:
    """Wraps a forecaster and keeps every window it was asked about with its answer."""

    def __init__(self, inner: Forecaster) -> None:
        self.inner = inner
        self._windows: list[np.ndarray] = []
        self._forecasts: list[np.ndarray] = []

    def predict(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        out = np.asarray(self.inner.predict(windows), dtype=np.float32).reshape(-1)
        self._windows.append(windows.copy())
        self._forecasts.append(out.copy())
        return out

    def table(self) -> ForecastTable:
        if not self._windows:
            return ForecastTable(np.zeros((0, 1, 1), np.float32), np.zeros(0, np.float32))
        return ForecastTable(np.concatenate(self._windows), np.concatenate(self._forecasts))


class CacheMiss(KeyError):
    """A window was asked for that no recorded replay saw."""


class CachedForecaster:
    """Plays recorded forecasts back, looked up by the window's bytes.

    The k-th request for a window gets the k-th forecast recorded for it (the last one once
    they run out), so a replay that repeats the recorded one gets exactly its numbers even
    where one window recurs. Tables of several files may be merged only when no window
    occurs in two of them (`disjoint_groups`): the order of repeats is per file.

    With ``copies`` m, every file plays as m series in lockstep (one per variant of a
    per-series setting): each occurrence of a window is asked for m times in a row.
    """

    def __init__(self, tables: list[ForecastTable]) -> None:
        recorded: dict[bytes, list[float]] = {}
        for table in tables:
            for key, value in zip(table.keys(), table.forecasts.tolist(), strict=True):
                recorded.setdefault(key, []).append(value)
        self._recorded = recorded
        self._asked: dict[bytes, int] = {}
        self._copies = 1

    def rewind(self, copies: int = 1) -> None:
        """Start the playback again (before each replay), for `copies` series per file."""
        self._asked = {}
        self._copies = max(1, copies)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        out = np.empty(windows.shape[0], dtype=np.float32)
        asked, recorded, copies = self._asked, self._recorded, self._copies
        for i, row in enumerate(windows):
            key = row.tobytes()
            values = recorded.get(key)
            if values is None:
                raise CacheMiss("a window no recorded replay saw: the replays differ")
            k = asked.get(key, 0)
            out[i] = values[min(k // copies, len(values) - 1)]
            asked[key] = k + 1
        return out


def disjoint_groups(tables: dict[str, ForecastTable]) -> list[list[str]]:
    """Split file names into groups whose tables share no window (first fit, in name order).

    One group in practice; two files can only share a window when their scaled readings
    agree to the bit over a whole window (a constant stretch at the same scaled value).
    """
    groups: list[tuple[list[str], set[bytes]]] = []
    for name in sorted(tables):
        keys = set(tables[name].keys())
        for members, seen in groups:
            if seen.isdisjoint(keys):
                members.append(name)
                seen |= keys
                break
        else:
            groups.append(([name], keys))
    return [members for members, _ in groups]
