"""From anomalous readings to alert events: one event per episode, with hysteresis.

A series fires once when a reading crosses the threshold, stays in its episode while
readings keep crossing it, and resolves after `resolve_after` normal readings in a row — so a
level shift that takes the forecaster 50 readings to follow is one alert, not 50.
"""

from __future__ import annotations

import hashlib

import numpy as np


def event_id(key: str, onset_ts: float) -> str:
    """Stable id of the episode of series `key` that began at `onset_ts`.

    The same reading replayed (a broker redelivery, a restart) gives the same id, so
    consumers can drop duplicates.
    """
    return hashlib.sha1(f"{key}|{onset_ts:.6f}".encode()).hexdigest()[:16]


class EpisodeTracker:
    """Per-slot episode state: in an episode or not, and how many normal readings since."""

    def __init__(self, capacity: int, resolve_after: int) -> None:
        self.resolve_after = max(1, resolve_after)
        self.active = np.zeros(capacity, dtype=bool)
        self.normal_run = np.zeros(capacity, dtype=np.int64)
        self.onset_ts = np.zeros(capacity, dtype=np.float64)

    def ensure_capacity(self, capacity: int) -> None:
        n = self.active.shape[0]
        if capacity > n:
            self.active = np.concatenate([self.active, np.zeros(capacity - n, dtype=bool)])
            self.normal_run = np.concatenate(
                [self.normal_run, np.zeros(capacity - n, dtype=np.int64)]
            )
            self.onset_ts = np.concatenate([self.onset_ts, np.zeros(capacity - n)])

    def reset(self, slot: int) -> None:
        self.active[slot] = False
        self.normal_run[slot] = 0
        self.onset_ts[slot] = 0.0

    def step(
        self, slots: np.ndarray, anomalous: np.ndarray, ts: np.ndarray
    ) -> list[tuple[int, str, float]]:
        """Advance distinct `slots` by one reading each.

        Returns ``(position in slots, "firing" | "resolved", onset_ts)`` for each transition.
        """
        transitions: list[tuple[int, str, float]] = []
        # Only slots in an episode or crossing now can change state: skip the rest cheaply.
        busy = np.flatnonzero(anomalous | self.active[slots])
        for i in busy.tolist():
            slot = int(slots[i])
            if anomalous[i]:
                self.normal_run[slot] = 0
                if not self.active[slot]:
                    self.active[slot] = True
                    self.onset_ts[slot] = float(ts[i])
                    transitions.append((i, "firing", float(ts[i])))
            else:
                self.normal_run[slot] += 1
                if self.normal_run[slot] >= self.resolve_after:
                    self.active[slot] = False
                    self.normal_run[slot] = 0
                    transitions.append((i, "resolved", float(self.onset_ts[slot])))
        return transitions
