"""From anomalous readings to alert events: one event per episode, with hysteresis.

A series fires once when a reading crosses the threshold, stays in its episode while
readings keep crossing it, and resolves after `resolve_after` normal readings in a row, but
not before `quiet_period` readings since it fired — so a level shift that takes the
forecaster 50 readings to follow is one alert, not 50, and a burst of short excursions is one
episode rather than a flapping alert.
"""

from __future__ import annotations

import hashlib

import numpy as np

from detector.scoring import COUNTER_CAP
from detector.slot_arrays import grown


def event_id(key: str, onset_ts: float) -> str:
    """Stable id of the episode of series `key` that began at `onset_ts`.

    The same reading replayed (a broker redelivery, a restart) gives the same id, so
    consumers can drop duplicates.
    """
    return hashlib.sha1(f"{key}|{onset_ts:.6f}".encode()).hexdigest()[:16]


class EpisodeTracker:
    """Per-slot episode state: in an episode or not, and how many normal readings since."""

    def __init__(self, capacity: int, resolve_after: int, quiet_period: int = 0) -> None:
        self.resolve_after = max(1, resolve_after)
        self.quiet_period = max(0, quiet_period)
        self.active = np.zeros(capacity, dtype=bool)
        # int32 per slot: 100,000 series hold these arrays for as long as the worker runs.
        self.normal_run = np.zeros(capacity, dtype=np.int32)
        self.since_onset = np.zeros(capacity, dtype=np.int32)
        self.onset_ts = np.zeros(capacity, dtype=np.float64)

    def arrays(self, prefix: str = "ep") -> dict[str, np.ndarray]:
        """The per-slot state, by name (for checkpoints)."""
        return {
            f"{prefix}_active": self.active,
            f"{prefix}_normal_run": self.normal_run,
            f"{prefix}_since_onset": self.since_onset,
            f"{prefix}_onset_ts": self.onset_ts,
        }

    def ensure_capacity(self, capacity: int) -> None:
        self.active = grown(self.active, capacity, False)
        self.normal_run = grown(self.normal_run, capacity, 0)
        self.since_onset = grown(self.since_onset, capacity, 0)
        self.onset_ts = grown(self.onset_ts, capacity, 0.0)

    def reset(self, slot: int) -> None:
        self.active[slot] = False
        self.normal_run[slot] = 0
        self.since_onset[slot] = 0
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
            if self.active[slot] and self.since_onset[slot] < COUNTER_CAP:
                self.since_onset[slot] += 1
            if anomalous[i]:
                self.normal_run[slot] = 0
                if not self.active[slot]:
                    self.active[slot] = True
                    self.since_onset[slot] = 0
                    self.onset_ts[slot] = float(ts[i])
                    transitions.append((i, "firing", float(ts[i])))
            else:
                if self.normal_run[slot] < COUNTER_CAP:
                    self.normal_run[slot] += 1
                if (
                    self.normal_run[slot] >= self.resolve_after
                    and self.since_onset[slot] >= self.quiet_period
                ):
                    self.active[slot] = False
                    self.normal_run[slot] = 0
                    transitions.append((i, "resolved", float(self.onset_ts[slot])))
        return transitions
