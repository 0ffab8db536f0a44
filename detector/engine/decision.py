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

from detector.engine.events import AlertState
from detector.engine.scoring import COUNTER_CAP
from detector.engine.slot_state import Column, ColumnState


def event_id(key: str, onset_ts: float) -> str:
    """Stable id of the episode of series `key` that began at `onset_ts`.

    The same reading replayed (a broker redelivery, a restart) gives the same id, so
    consumers can drop duplicates.
    """
    return hashlib.sha1(f"{key}|{onset_ts:.6f}".encode()).hexdigest()[:16]


class EpisodeTracker(ColumnState):
    """Per-slot episode state: in an episode or not, and how many normal readings since.

    A `detector.engine.slot_state.SlotState` named `name`, its snapshot names prefixed `prefix`;
    `optional` when snapshots older than the part may lack them. With `keep_signal`, it
    also keeps which signal fired each open episode (`signal`, an index into
    `detector.engine.scoring.SIGNALS`).
    """

    def __init__(
        self,
        capacity: int,
        resolve_after: int,
        quiet_period: int = 0,
        *,
        name: str = "episodes",
        prefix: str = "ep",
        optional: bool = False,
        keep_signal: bool = False,
    ) -> None:
        self.resolve_after = max(1, resolve_after)
        self.quiet_period = max(0, quiet_period)
        self.active = np.zeros(capacity, dtype=bool)
        # int32 per slot: 100,000 series hold these arrays for as long as the worker runs.
        self.normal_run = np.zeros(capacity, dtype=np.int32)
        self.since_onset = np.zeros(capacity, dtype=np.int32)
        self.onset_ts = np.zeros(capacity, dtype=np.float64)
        self.signal = np.zeros(capacity if keep_signal else 0, dtype=np.int8)
        self.name = name
        columns = [
            Column(f"{prefix}_{attr}", attr, fill, optional)
            for attr, fill in (
                ("active", False),
                ("normal_run", 0),
                ("since_onset", 0),
                ("onset_ts", 0.0),
            )
        ]
        if keep_signal:  # added after the first checkpoints: optional
            columns.append(Column("episode_signal", "signal", 0, optional=True))
        self.columns = tuple(columns)

    def ensure_capacity(self, capacity: int) -> None:
        self.grow(capacity)

    def is_open(self, slots: np.ndarray) -> np.ndarray:
        """Mask of `slots` in an episode."""
        open_: np.ndarray = self.active[slots]
        return open_

    def open_onset(self, slot: int) -> float | None:
        """When the open episode of `slot` began (None: it has none)."""
        return float(self.onset_ts[slot]) if self.active[slot] else None

    def signal_of(self, slot: int) -> int:
        """The signal (an index into `detector.engine.scoring.SIGNALS`) that fired the
        episode of `slot` (with `keep_signal`)."""
        return int(self.signal[slot])

    def set_signal(self, slot: int, signal: int) -> None:
        """Record which signal fired the episode that `slot` just opened."""
        self.signal[slot] = signal

    def step(
        self, slots: np.ndarray, anomalous: np.ndarray, ts: np.ndarray
    ) -> list[tuple[int, AlertState, float]]:
        """Advance distinct `slots` by one reading each.

        Returns ``(position in slots, "firing" | "resolved", onset_ts)`` for each transition.
        """
        transitions: list[tuple[int, AlertState, float]] = []
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
