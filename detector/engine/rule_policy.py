"""The rules as the detection core applies them: per-slot arrays, asked per reading.

`SeriesRules` keeps, for every slot of the window store, the series' threshold, whether it is
muted and which set of maintenance windows it has (an index into a few distinct
`WindowSet`s). `suppression` answers for a round of readings, vectorised: none, ``mute`` or
``maintenance`` (mute wins when both hold). Everything here is pure; the core owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from detector.engine.events import NO_LABELS
from detector.engine.rule_windows import WindowSet
from detector.engine.rules import NO_POLICY, RuleSet, SeriesPolicy
from detector.engine.slot_arrays import grown

NOT_SUPPRESSED, MUTED, MAINTENANCE = 0, 1, 2
SUPPRESS_REASONS = ("", "mute", "maintenance")
"""Reason of each suppression code; the label values of `iotad_alerts_suppressed_total`."""


class SeriesRules:
    """The effective rules of every slot. `default_threshold` applies where no rule sets one."""

    def __init__(self, capacity: int, default_threshold: float, rules: RuleSet | None = None):
        self.default_threshold = default_threshold
        self.rules = rules or RuleSet()
        self.threshold = np.full(capacity, default_threshold, dtype=np.float64)
        self.muted = np.zeros(capacity, dtype=bool)
        self.window_set = np.full(capacity, -1, dtype=np.int32)
        self.policies: list[SeriesPolicy] = [NO_POLICY] * capacity
        self._sets: list[WindowSet] = []
        self._set_of: dict[tuple[object, ...], int] = {}
        self._any_windows = False
        self._any_muted = False

    def ensure_capacity(self, capacity: int) -> None:
        self.threshold = grown(self.threshold, capacity, self.default_threshold)
        self.muted = grown(self.muted, capacity, False)
        self.window_set = grown(self.window_set, capacity, -1)
        if capacity > len(self.policies):
            self.policies.extend([NO_POLICY] * (capacity - len(self.policies)))

    # -- SlotState (`detector.engine.slot_state`): derived from the rules, never in a snapshot -----

    name = "rules"
    version = 1
    required: tuple[str, ...] = ()

    def grow(self, capacity: int) -> None:
        self.ensure_capacity(capacity)

    def reset(self, slot: int) -> None:
        self.threshold[slot] = self.default_threshold
        self.muted[slot] = False
        self.window_set[slot] = -1
        self.policies[slot] = NO_POLICY

    def snapshot(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def restore(self, slots: np.ndarray, state: Mapping[str, np.ndarray]) -> None:
        """Nothing to load: `assign` gives each series its policy when it is allocated."""

    def nbytes(self) -> int:
        return self.threshold.nbytes + self.muted.nbytes + self.window_set.nbytes

    def assign(self, slot: int, key: str) -> None:
        """Give `slot` (series `key`, ``device/metric``) its policy under the current rules."""
        device, _, metric = key.partition("/")
        policy = self.rules.policy(device, metric)
        self.policies[slot] = policy
        self.threshold[slot] = (
            self.default_threshold if policy.threshold is None else policy.threshold
        )
        self.muted[slot] = policy.mute
        self._any_muted = self._any_muted or policy.mute
        if policy.windows:
            windows = tuple(w for _, w in policy.windows)
            index = self._set_of.get(windows)
            if index is None:
                index = self._set_of[windows] = len(self._sets)
                self._sets.append(WindowSet(windows))
            self.window_set[slot] = index
            self._any_windows = True
        else:
            self.window_set[slot] = -1

    def replace(self, rules: RuleSet, slots: Iterable[tuple[int, str]]) -> None:
        """New rules for every active ``(slot, key)``: from their next reading on."""
        self.rules = rules
        self._sets, self._set_of = [], {}
        self._any_windows = self._any_muted = False
        self.threshold[:] = self.default_threshold
        self.muted[:] = False
        self.window_set[:] = -1
        self.policies = [NO_POLICY] * len(self.policies)
        for slot, key in slots:
            self.assign(slot, key)

    def reassign(self, slots: Iterable[tuple[int, str]]) -> None:
        """The current rules given afresh to every active ``(slot, key)`` (state taken over
        from a core that had other rules)."""
        self.replace(self.rules, slots)

    def suppression(self, slots: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
        """Per reading (slot, ts): `NOT_SUPPRESSED`, `MUTED` or `MAINTENANCE`; None when no
        reading of the round is suppressed (the common case, without allocating)."""
        if not self._any_muted and not self._any_windows:
            return None  # no rule mutes or has windows: one attribute read per round
        muted = self.muted[slots]
        has_window = self.window_set[slots] >= 0 if self._any_windows else None
        if not muted.any() and (has_window is None or not has_window.any()):
            return None
        codes = np.where(muted, MUTED, NOT_SUPPRESSED).astype(np.int8)
        if has_window is not None:
            pending = np.flatnonzero(has_window & ~muted)
            if pending.size:
                sets = self.window_set[slots[pending]]
                for index in np.unique(sets).tolist():
                    chosen = pending[sets == index]
                    inside = self._sets[index].contains(ts[chosen])
                    codes[chosen[inside]] = MAINTENANCE
        return codes if codes.any() else None

    def suppression_at(self, slot: int, ts: float) -> int:
        """`suppression` of one reading."""
        codes = self.suppression(np.array([slot]), np.array([ts], dtype=np.float64))
        return NOT_SUPPRESSED if codes is None else int(codes[0])

    def thresholds(self, slots: np.ndarray) -> np.ndarray:
        """The score threshold of each of `slots`."""
        threshold: np.ndarray = self.threshold[slots]
        return threshold

    def threshold_of(self, slot: int) -> float:
        return float(self.threshold[slot])

    def severity(self, slot: int) -> str | None:
        return self.policies[slot].severity

    def labels(self, slot: int) -> Mapping[str, str]:
        return self.policies[slot].labels or NO_LABELS
