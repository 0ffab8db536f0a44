"""The detection core: windows, batched forecasts, scoring and decisions. Pure, no I/O.

The worker (`iotad run`), offline replay / NAB evaluation (`iotad eval`) and the tests all
call `DetectionCore.process` with plain `Reading`s and get a `BatchResult` back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from detector.artifact import MAX_SIGNAL_DIVISOR, Artifact
from detector.decision import EpisodeTracker, event_id
from detector.detection_config import DetectionConfig
from detector.device_judge import DeviceJudge
from detector.events import (
    ENDED,
    EVICTED,
    NO_LABELS,
    AlertEvent,
    BatchResult,
    Dropped,
    Eviction,
    Scored,
    Suppressed,
)
from detector.features import fit_scale, model_input
from detector.forecaster import Forecaster
from detector.model_carry import CarryReport, ErrorRule, carry_over
from detector.readings import DUPLICATE, OUT_OF_ORDER, OUT_OF_RANGE, TOO_MANY_SERIES, Reading
from detector.relations import RELATION_HALFLIFE, DeviceRelations
from detector.rule_policy import NOT_SUPPRESSED, SUPPRESS_REASONS, SeriesRules
from detector.rules import RuleSet
from detector.scoring import SIGNALS, AnomalyScorer, ErrorTracker, SeasonalErrors
from detector.seasonality import SeasonalRings
from detector.slot_arrays import grown
from detector.windows import WindowStore

CHECKPOINT_FORMAT = 1
MAX_ABS_VALUE = 1e15
"""Readings whose value is larger in magnitude (or not finite) are dropped as
``out_of_range``. Far beyond any physical sensor, and small enough that the statistics stay
finite whatever the series' scale (a single 1e308 once overflowed them, and the series never
alerted again)."""
# State added after format 1 was written: a checkpoint without it still restores, and those
# series start the flatline signal afresh (no run counted yet).
_OPTIONAL_STATE = frozenset(
    {
        "flat_run",
        "flat_longest_run",
        "repeat_rate",
        "gap",
        "silent",
        "episode_signal",
        "relation_ring",
        "relation_total",
        "relation_count",
        "relation_run_mean",
        "relation_run_var",
        "relation_seen",
        "sustained",
        "seasonal_period",
        "silent_suppressed",
        "held_active",
        "held_normal_run",
        "held_since_onset",
        "held_onset_ts",
    }
)
_RELATION_PREFIXES = ("rel", "rres")
"""Checkpoint names of the device relations of values and of forecast residuals."""
_GAP_ALPHA = 0.1
"""Weight of the newest interval in a series' typical interval between readings."""


_Past = tuple[np.ndarray, np.ndarray] | None
"""Per model input row, its scaled window and timestamps (for the device models)."""


@dataclass(slots=True)
class _Admitted:
    """The readings of one batch the core accepted, as parallel arrays."""

    readings: list[Reading]
    slots: np.ndarray
    values: np.ndarray
    ts: np.ndarray
    rank: np.ndarray  # k for the k-th reading of its series in this batch


def _taken_by_slot(
    slots: list[int], stamps: list[float], values: list[float]
) -> dict[int, dict[float, float]]:
    """The readings a batch has taken so far, as slot -> {ts: value} (built only when a
    reading needs checking against them: repeats are rare)."""
    out: dict[int, dict[float, float]] = {}
    for slot, ts, value in zip(slots, stamps, values, strict=True):
        out.setdefault(slot, {})[ts] = value
    return out


class DetectionCore:
    """Scores readings against a forecaster, keeping per-series state in numpy arrays."""

    def __init__(
        self,
        artifact: Artifact,
        forecaster: Forecaster,
        config: DetectionConfig | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        self.artifact = artifact
        self.forecaster = forecaster
        self.config = config or DetectionConfig()
        self.window_len = artifact.window_len
        self.features = artifact.features
        self.device_judge = DeviceJudge.from_artifact(artifact)
        # Device models need to know that a device's windows were taken together.
        keep_ts = len(artifact.features) > 1 or self.device_judge.active
        self.store = WindowStore(artifact.window_len, self.config.max_series, keep_ts=keep_ts)
        cap = self.store.capacity
        self.offset = np.zeros(cap, dtype=np.float64)
        self.scale = np.ones(cap, dtype=np.float64)
        self.has_scale = np.zeros(cap, dtype=bool)
        self.errors = ErrorTracker(cap, self.config.error_halflife, self.config.error_clip)
        self.scorer = AnomalyScorer(cap, self.config.scoring())
        self.seasonal_rings = SeasonalRings()
        self.episodes = EpisodeTracker(cap, self.config.resolve_after, self.config.quiet_period)
        # The episodes a mute or maintenance rule kept back, followed as the real ones would
        # be, so that each is counted once (`BatchResult.suppressed`), not once per reading.
        self.held = EpisodeTracker(cap, self.config.resolve_after, self.config.quiet_period)
        self.rules = SeriesRules(cap, self.config.threshold, rules)
        cfg = self.config
        # One model of the device's values and one of its forecast residuals; both attach
        # metrics in the same order, so a metric has the same position in each.
        self.relations = tuple(
            DeviceRelations(RELATION_HALFLIFE, cfg.error_clip, cfg.learn_readings)
            for _ in _RELATION_PREFIXES
        )
        self.dev_pos = np.full(cap, -1, dtype=np.int32)
        self.dev_row = np.full(cap, -1, dtype=np.int32)
        self.z_scale = np.ones(cap, dtype=np.float64)
        named = artifact.alert_signal_scales
        # A signal the artifact's calibration does not name came after it was calibrated:
        # undivided, it would spend a budget nobody measured, so it stays off (the largest
        # divisor an artifact may hold) until the model is retrained.
        self.signal_scales = (
            np.array([named.get(name, MAX_SIGNAL_DIVISOR) for name in SIGNALS]) if named else None
        )
        self.gap = np.full(cap, np.nan, dtype=np.float64)
        self.silent = np.zeros(cap, dtype=bool)
        self.silent_suppressed = np.zeros(cap, dtype=bool)  # its silence alert was kept back
        self.episode_signal = np.zeros(cap, dtype=np.int8)  # what fired the open episode
        self.clock = -np.inf
        self._clock_points = np.empty(0)
        self._silence_checked = -np.inf  # the clock at the last silence sweep
        self.carry_errors: ErrorRule = "calibration"
        """How `restore` treats the error statistics of a snapshot of another model."""
        self.last_carry: CarryReport | None = None
        """What the last `restore` of another model's snapshot carried over (None: none)."""
        self.trace: list[tuple[np.ndarray, ...]] | None = None
        """When a list, each scored round appends (slots, ts, z, flag, signal): the input of
        alert calibration (`training.alerting`)."""

    # -- series ------------------------------------------------------------------------------

    @property
    def active_series(self) -> int:
        return len(self.store)

    @property
    def warming_series(self) -> int:
        used = self.store.used_slots()
        return int(np.count_nonzero(self.store.count[used] < self.window_len))

    def _allocate(self, key: str) -> int | None:
        slot = self.store.allocate(key)
        if slot is None:
            return None
        cap = self.store.capacity
        if cap > self.offset.shape[0]:
            self.offset = grown(self.offset, cap, 0.0)
            self.scale = grown(self.scale, cap, 1.0)
            self.has_scale = grown(self.has_scale, cap, False)
            self.errors.ensure_capacity(cap)
            self.scorer.ensure_capacity(cap)
            self.episodes.ensure_capacity(cap)
            self.held.ensure_capacity(cap)
            self.rules.ensure_capacity(cap)
            self.silent_suppressed = grown(self.silent_suppressed, cap, False)
            self.dev_pos = grown(self.dev_pos, cap, -1)
            self.dev_row = grown(self.dev_row, cap, -1)
            self.z_scale = grown(self.z_scale, cap, 1.0)
            self.gap = grown(self.gap, cap, np.nan)
            self.silent = grown(self.silent, cap, False)
            self.episode_signal = grown(self.episode_signal, cap, 0)
        device, _, metric = key.partition("/")
        if self.config.relate_devices:
            for relations in self.relations:
                row, pos = relations.attach(device, metric)
            self.dev_row[slot], self.dev_pos[slot] = row, pos
        self.z_scale[slot] = self.artifact.z_scale_for(key)
        self.gap[slot] = np.nan
        self.silent[slot] = False
        self.silent_suppressed[slot] = False
        self.rules.assign(slot, key)
        known = self.artifact.scale_for(key)
        value_range = None
        if known is not None:
            self.offset[slot], self.scale[slot] = known.offset, known.scale
            self.has_scale[slot] = True
            if known.low is not None and known.high is not None:
                value_range = (
                    (known.low - known.offset) / known.scale,
                    (known.high - known.offset) / known.scale,
                )
        else:
            self.has_scale[slot] = False
        errors = self.artifact.errors_for(key)
        self.errors.seed(slot, errors)
        # In scaled units a standard-scaled series has mean 0 and std 1; a min-max scaled one
        # spans [0, 1] (std of a uniform spread as the prior).
        trained = known is not None
        self._set_period(slot, known.period if known is not None else None)
        if self.artifact.scaling_method == "minmax":
            self.scorer.seed(slot, errors, 0.5, 12**-0.5, value_range, trained)
        else:
            self.scorer.seed(slot, errors, 0.0, 1.0, value_range, trained)
        if known is not None and known.repeat_run is not None:
            # A stopped machine's weekend of zeros is in the history: not news on Saturday.
            self.scorer.longest_repeat_run[slot] = known.repeat_run
        self.episodes.reset(slot)
        self.held.reset(slot)
        return slot

    def set_rules(self, rules: RuleSet) -> None:
        """Apply new rules (a reload) to every series, from its next reading on.

        Open episodes stay open: a series muted while it fires resolves as usual (its
        readings now count as normal) and its ``resolved`` event is sent.
        """
        self.rules.replace(rules, ((s, key) for s in self._used() if (key := self.store.key(s))))

    def _used(self) -> list[int]:
        return [int(s) for s in self.store.used_slots().tolist()]

    def evict_idle(self, now: float) -> Eviction:
        """Free the slots of series idle for longer than `idle_evict_s` (clock time `now`).

        An alert still open on an evicted series (an episode, or a silence) is resolved,
        stamped `now` and with reason ``evicted``: with its state gone nothing else would
        ever resolve it, and it would stay firing downstream for good. Returns how many
        series were evicted and those events.
        """
        stale = self.store.idle(now - self.config.idle_evict_s)
        events: list[AlertEvent] = []
        for key in stale:
            events.extend(self._release(key, now, EVICTED))
        return Eviction(len(stale), events)

    def _release(self, key: str, at: float, reason: str) -> list[AlertEvent]:
        """Forget series `key`; returns the resolved events (stamped `at`, with `reason`) of
        the alerts still open on it."""
        slot = self.store.slot(key)
        if slot is None:
            return []
        device, _, metric = key.partition("/")
        events = self._close(slot, device, metric, at, reason)
        self.store.release(key)
        self._set_period(slot, None)  # its ring is freed, not kept until reuse
        self._detach_device(key, slot)
        return events

    def end_devices(self, ended: Mapping[str, float]) -> list[AlertEvent]:
        """End every series of the devices `ended` names (device -> time it ended): their
        source said they are gone (a Sparkplug DEATH).

        They leave the core as idle series do (`evict_idle`): no silence alert can fire for
        them, and the first reading after they come back starts a new segment (a fresh
        window that warms up, seeded from the artifact like any new series) rather than
        being judged against the readings before the gap. An open episode (or silence) of
        an ended series is resolved, stamped with the time it ended and with reason
        ``ended``: nothing else would ever resolve it. Returns those events.
        """
        if not ended:
            return []
        events: list[AlertEvent] = []
        keys = self.store.keys()  # a copy: releasing changes the store
        for key in keys:
            at = ended.get(key.partition("/")[0])
            if at is not None:
                events.extend(self._release(key, at, ENDED))
        return events

    def _close(
        self, slot: int, device: str, metric: str, at: float, reason: str
    ) -> list[AlertEvent]:
        """Resolved events of the open episode and silence of a series that ends at `at`
        (never before the alert's onset). A silence whose firing a rule kept back ends
        unseen, as it would with a reading."""
        events: list[AlertEvent] = []
        value = float(self.store.last_value[slot])
        if self.silent[slot] and not self.silent_suppressed[slot]:
            onset = float(self.store.order_ts[slot])
            resolved = self._silence_event("resolved", device, metric, max(at, onset), value, onset)
            events.append(replace(resolved, reason=reason))
        if self.episodes.active[slot]:
            onset = float(self.episodes.onset_ts[slot])
            rules = self.rules
            events.append(
                AlertEvent(
                    id=f"{event_id(f'{device}/{metric}', onset)}-resolved",
                    state="resolved",
                    device=device,
                    metric=metric,
                    ts=max(at, onset),
                    value=value,
                    expected=value,
                    lower=value,
                    upper=value,
                    score=0.0,
                    threshold=float(rules.threshold[slot]),
                    signal=SIGNALS[int(self.episode_signal[slot])],
                    severity=rules.severity(slot),
                    labels=rules.labels(slot),
                    reason=reason,
                )
            )
        return events

    def _detach_device(self, key: str, slot: int) -> None:
        if self.dev_row[slot] >= 0:
            device = key.partition("/")[0]
            for relations in self.relations:
                relations.detach(device, int(self.dev_pos[slot]))
        self.dev_row[slot], self.dev_pos[slot] = -1, -1

    def _set_period(self, slot: int, period: int | None) -> None:
        """A slot's seasonal ring and its seasonal error statistics come and go together
        (a fresh row when it gets a period)."""
        self.seasonal_rings.set_period(slot, period)
        if period:
            self.scorer.seasonal_errors.attach(slot)
        else:
            self.scorer.seasonal_errors.detach(slot)

    # -- the batch ---------------------------------------------------------------------------

    def process(self, readings: Sequence[Reading], now: float | None = None) -> BatchResult:
        """Take a batch of readings (any series, any order in time across series).

        Readings of one series must come in increasing `ts`; one whose ts is not after the
        series' order bound is dropped with reason ``out_of_order``, or ``duplicate`` when a
        reading with its ts and value is in the series' window (a redelivery). The order
        bound is the newest ts, but at most `detector.windows.FUTURE_SLACK_S` ahead of `now`:
        a reading from the future cannot make the genuine ones after it out of order. A
        value beyond ``±MAX_ABS_VALUE`` (or a non-finite value or ts) is dropped as
        ``out_of_range``. All ready windows go to the forecaster in **one** `predict` call.
        `now` is the clock time (default: wall clock), for idle eviction and the order bound.

        Scored readings and events of one series come out in time order.
        """
        result = BatchResult(scored=[], events=[], dropped=[])
        seen_at = time.time() if now is None else now
        admitted = self._admit(readings, result, seen_at)
        if admitted is None:
            return result
        # The clock silence is judged by is the readings' time, never ahead of `now`: a
        # reading stamped in the future must not make every other series look silent.
        clock = admitted.ts[admitted.ts <= seen_at]
        self._clock_points = np.unique(np.append(clock, self.clock))
        windows, owners, previous, past = self._collect_windows(admitted, seen_at, result)
        if owners.size:
            started = time.perf_counter()
            forecast = np.asarray(self.forecaster.predict(windows), dtype=np.float64)
            result.inference_s = time.perf_counter() - started
            result.model_batch = int(owners.size)
            self._score(admitted, owners, forecast, previous, past, result)
        self.clock = float(self._clock_points[-1])
        if self.config.silence_after > 0:
            self._detect_silence(result)
        return result

    def _silence_round(self, adm: _Admitted, idx: np.ndarray, result: BatchResult) -> None:
        """Silence ended by the readings `idx` of one round (before they are pushed).

        A series was silent between its previous reading and this one when the gap exceeds
        its limit and the clock (another reading's time) passed the limit in between. The
        alert's time is when the limit passed, so the events are the same however the
        readings were batched.
        """
        slots = adm.slots[idx]
        # The order bound: the newest ts unless that was stamped in the future (`_learn_gap`).
        prev = self.store.order_ts[slots]
        limit = prev + self.config.silence_after * self.gap[slots]  # NaN gap: never
        ts = adm.ts[idx]
        # The first clock point past the limit, if any, must come before this reading.
        after = np.searchsorted(self._clock_points, limit, side="right")
        passed = after < self._clock_points.size
        nxt = self._clock_points[np.minimum(after, self._clock_points.size - 1)]
        gone = self.silent[slots] | (passed & (nxt < ts) & (limit < ts))
        for i in np.flatnonzero(gone).tolist():
            slot, r = int(slots[i]), adm.readings[int(idx[i])]
            onset = float(prev[i])
            if not self.silent[slot]:
                value = float(self.store.last_value[slot])
                firing = self._silence_event(
                    "firing", r.device, r.metric, float(limit[i]), value, onset
                )
                self._silence_fires(slot, firing, result)
            self.silent[slot] = False
            if self.silent_suppressed[slot]:  # its firing was kept back: so is the end
                self.silent_suppressed[slot] = False
                continue
            result.events.append(
                self._silence_event("resolved", r.device, r.metric, r.ts, r.value, onset)
            )

    def _detect_silence(self, result: BatchResult) -> None:
        """Series quiet for `silence_after` of their typical intervals fire ``silence``.

        One vectorised pass over the slot arrays, and only when the clock moved: a dict
        walk over 100,000 series per drain cost milliseconds on the worker's hot path.
        """
        if self.clock <= self._silence_checked:
            return
        self._silence_checked = self.clock
        store = self.store
        cap = store.capacity
        # From the order bound, not the newest ts (see `_learn_gap`): a reading stamped in the
        # future must not hold its series' silence off. A free slot has no readings (count 0).
        limit = store.order_ts + self.config.silence_after * self.gap[:cap]
        gone = np.flatnonzero(
            (store.count > 0) & (self.clock > limit) & ~self.silent[:cap]
        )  # NaN gap: never
        for slot in gone.tolist():
            key = store.key(slot)
            if key is None:
                continue
            self.silent[slot] = True
            device, _, metric = key.partition("/")
            value, onset = float(store.last_value[slot]), float(store.order_ts[slot])
            at = onset + self.config.silence_after * float(self.gap[slot])
            self._silence_fires(
                slot, self._silence_event("firing", device, metric, at, value, onset), result
            )

    def _silence_fires(self, slot: int, event: AlertEvent, result: BatchResult) -> None:
        """A silence alert, unless a rule keeps it back at the time the silence began to
        count (a machine switched off for maintenance goes quiet)."""
        code = self.rules.suppression_at(slot, event.ts)
        self.silent_suppressed[slot] = code != NOT_SUPPRESSED
        if code == NOT_SUPPRESSED:
            result.events.append(event)
        else:
            result.suppressed.append(Suppressed(event, SUPPRESS_REASONS[code]))

    def _silence_event(
        self, state: str, device: str, metric: str, ts: float, value: float, onset: float
    ) -> AlertEvent:
        base = event_id(f"{device}/{metric}|silence", onset)
        slot = self.store.slot(f"{device}/{metric}")
        rules = self.rules
        return AlertEvent(
            id=base if state == "firing" else f"{base}-resolved",
            state=state,  # type: ignore[arg-type]
            device=device,
            metric=metric,
            ts=ts,
            value=value,
            expected=value,
            lower=value,
            upper=value,
            score=1.0,
            threshold=self.config.threshold if slot is None else float(rules.threshold[slot]),
            signal="silence",
            severity=None if slot is None else rules.severity(slot),
            labels=NO_LABELS if slot is None else rules.labels(slot),
        )

    def _admit(
        self, readings: Sequence[Reading], result: BatchResult, seen_at: float
    ) -> _Admitted | None:
        store = self.store
        slot_of = store.slot
        # Pass 1: the slot of every reading (None: no room; -1: out of range, never given a
        # slot), allocating in input order.
        slot_list: list[int | None] = []
        # Locals, and the readings unpacked: this runs per reading.
        low, high, ninf, inf = -MAX_ABS_VALUE, MAX_ABS_VALUE, -math.inf, math.inf
        for device, metric, ts, value in readings:
            # Comparisons are False for NaN: a NaN value (or ts) is out of range too.
            if not (low <= value <= high and ninf < ts < inf):
                slot_list.append(-1)
                continue
            key = f"{device}/{metric}"  # == reading.key, without the call
            slot = slot_of(key)
            if slot is None:
                slot = self._allocate(key)
            slot_list.append(slot)
        known = list(set(slot_list) - {None, -1})
        # The stores' order bound and newest ts of every slot in one read each, not a numpy
        # scalar read per reading.
        rows = np.array(known, dtype=np.int64)
        stored = dict(
            zip(
                known,
                zip(store.order_ts[rows].tolist(), store.last_ts[rows].tolist(), strict=True),
                strict=True,
            )
        )
        # Pass 2: order checks, in input order.
        kept: list[Reading] = []
        slots: list[int] = []
        ranks: list[int] = []
        values: list[float] = []
        stamps: list[float] = []
        last: dict[int, tuple[float, float, int]] = {}  # slot -> (bound, newest, readings)
        taken: dict[int, dict[float, float]] | None = None  # slot -> {ts: value}, on demand
        ahead = seen_at + store.future_slack_s  # no order bound moves past this
        for reading, slot in zip(readings, slot_list, strict=True):
            if slot is None or slot < 0:
                reason = TOO_MANY_SERIES if slot is None else OUT_OF_RANGE
                result.dropped.append(Dropped(reading, reason))
                continue
            prev = last.get(slot)
            if prev is None:
                bound, newest = stored[slot]
                n = 0
            else:
                bound, newest, n = prev
            ts, value = reading.ts, reading.value
            if ts > newest:  # the common case: after every reading taken
                newest = ts
            else:  # a repeat, a late reading, or one after a reading from the future
                if taken is None:
                    taken = _taken_by_slot(slots, stamps, values)
                repeat = self._repeat(slot, ts, value, taken)
                if repeat is not None or ts <= bound:
                    reason = DUPLICATE if repeat else OUT_OF_ORDER
                    result.dropped.append(Dropped(reading, reason))
                    continue
            if taken is not None:
                taken.setdefault(slot, {})[ts] = value
            # The bound as `WindowStore.push` will set it (no min/max calls: per reading).
            capped = ts if ts < ahead else ahead
            last[slot] = (capped if capped > bound else bound, newest, n + 1)
            kept.append(reading)
            slots.append(slot)
            ranks.append(n)
            values.append(value)
            stamps.append(ts)
        if not kept:
            return None
        return _Admitted(
            readings=kept,
            slots=np.array(slots, dtype=np.int64),
            values=np.array(values, dtype=np.float64),
            ts=np.array(stamps, dtype=np.float64),
            rank=np.array(ranks, dtype=np.int64),
        )

    def _repeat(
        self, slot: int, ts: float, value: float, taken: dict[int, dict[float, float]]
    ) -> bool | None:
        """Whether series `slot` already has a reading at `ts` (this batch's, or one in its
        window): True with this value, False with another, None when it has none."""
        in_batch = taken.get(slot, {}).get(ts)
        if in_batch is not None:
            return in_batch == value
        return self.store.repeat_of(slot, ts, value)

    def _collect_windows(
        self, adm: _Admitted, seen_at: float, result: BatchResult
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Past]:
        """Build the model input of every ready reading, pushing readings into the windows.

        Readings are taken in rounds (round k = the k-th reading of each series in the batch)
        so that a reading's window holds exactly the readings before it, batch included.
        Returns the stacked model input and, per row, the index of its reading in `adm` and
        the series' previous reading (exact, for the flatline signal; the window is float32),
        and, when the artifact has device models, each row's scaled window and timestamps.
        """
        store = self.store
        inputs: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        previous: list[np.ndarray] = []
        past_values: list[np.ndarray] = []
        past_ts: list[np.ndarray] = []
        judging = self.device_judge.active
        for k in range(int(adm.rank.max()) + 1):
            idx = np.flatnonzero(adm.rank == k)
            slots = adm.slots[idx]
            ready = store.ready(slots)
            if ready.any():
                r_idx, r_slots = idx[ready], slots[ready]
                values, ts = store.windows(r_slots)
                self._fit_missing_scales(r_slots, values)
                scaled = (values - self.offset[r_slots, None]) / self.scale[r_slots, None]
                for j in np.flatnonzero(~np.isfinite(self.scorer.low[r_slots])).tolist():
                    self.scorer.seed_range(int(r_slots[j]), scaled[j])
                inputs.append(model_input(scaled, ts, self.features))
                owners.append(r_idx)
                previous.append(store.last_value[r_slots])
                if judging and ts is not None:
                    past_values.append(scaled)
                    past_ts.append(ts)
            result.warming += int(np.count_nonzero(~ready))
            if self.config.silence_after > 0:
                self._silence_round(adm, idx, result)
            self._learn_gap(slots, adm.ts[idx])
            store.push(slots, adm.values[idx], adm.ts[idx], seen_at)
        if not owners:
            empty = np.empty((0, self.window_len, len(self.features)), np.float32)
            return empty, np.empty(0, int), np.empty(0), None
        past = (np.concatenate(past_values), np.concatenate(past_ts)) if past_ts else None
        return np.concatenate(inputs), np.concatenate(owners), np.concatenate(previous), past

    def _learn_gap(self, slots: np.ndarray, ts: np.ndarray) -> None:
        """A series' typical interval between readings (for silence): an exponentially
        weighted mean, each new interval capped at 3 typical ones so a dropout does not
        teach the series that long gaps are normal."""
        # From the order bound, not the newest ts: after a reading stamped in the future the
        # next genuine interval must not come out negative (nor silence wait for that future).
        gap = ts - self.store.order_ts[slots]
        gap = np.where(gap > 0, gap, np.nan)  # no interval: learn nothing from it
        old = self.gap[slots]
        fresh = np.isfinite(gap) & ~np.isfinite(old)
        capped = np.minimum(gap, 3.0 * old)
        updated = np.where(fresh, gap, old + _GAP_ALPHA * (capped - old))
        self.gap[slots] = np.where(np.isfinite(gap) | fresh, updated, old)

    def _fit_missing_scales(self, slots: np.ndarray, windows: np.ndarray) -> None:
        """Series the model was not trained on take their scale from their first window."""
        missing = ~self.has_scale[slots]
        for slot, window in zip(slots[missing].tolist(), windows[missing], strict=True):
            offset, scale = fit_scale(window, self.artifact.scaling_method)
            # A nearly flat warm-up window would blow later deviations up to huge inputs.
            scale = max(scale, 1e-3 * max(1.0, abs(offset)))
            self.offset[slot], self.scale[slot] = offset, scale
            self.has_scale[slot] = True

    def _score(
        self,
        adm: _Admitted,
        owners: np.ndarray,
        forecast: np.ndarray,
        previous: np.ndarray,
        past: _Past,
        result: BatchResult,
    ) -> None:
        cfg = self.config
        ranks = adm.rank[owners]
        for k in range(int(ranks.max()) + 1):
            rows = np.flatnonzero(ranks == k)
            idx = owners[rows]
            slots = adm.slots[idx]
            offset, scale = self.offset[slots], self.scale[slots]
            values = adm.values[idx]
            scaled = (values - offset) / scale
            residual = scaled - forecast[rows]
            relation_z = relation_resid = judged_rows = None
            if cfg.relate_devices:
                residual, relation_z, relation_resid = self._relate(
                    slots, adm.ts[idx], scaled, residual
                )
            mean, std = self.errors.mean[slots], self.errors.std(slots)
            # The forecast, corrected by what the device's other sensors say now.
            expected = (scaled - residual) * scale + offset
            lower = expected + (mean - cfg.band_sigmas * std) * scale
            upper = expected + (mean + cfg.band_sigmas * std) * scale
            if cfg.relate_devices and past is not None:
                judged = self._judge_devices(adm, idx, scaled, past[0][rows], past[1][rows])
                if judged is not None:
                    on, dz, d_expected, d_sigma = judged
                    judged_rows = on
                    assert relation_z is not None and relation_resid is not None
                    # The device model's deviation, in its own units, is what every
                    # device-level signal and the error likelihood judge from here on.
                    residual = np.where(on, dz, residual)
                    relation_z = np.where(on, dz, relation_z)
                    relation_resid = np.where(on, dz, relation_resid)
                    centre = d_expected * scale + offset
                    half = cfg.band_sigmas * d_sigma * scale
                    expected = np.where(on, centre, expected)
                    lower = np.where(on, centre - half, lower)
                    upper = np.where(on, centre + half, upper)
            self.errors.update(slots, residual)
            seasonal_forecast = self.seasonal_rings.forecast_and_push(slots, scaled)
            repeated = values == previous[rows]
            score = self.scorer.score(
                slots,
                scaled,
                residual,
                scaled - seasonal_forecast,
                repeated,
                relation_z,
                self.z_scale[slots],
                relation_resid,
                self.signal_scales,
                judged_rows,
            )
            if self.trace is not None:
                sc = self.scorer
                self.trace.append(
                    (slots, adm.ts[idx], sc.last_z, sc.last_flag, sc.last_signal, sc.last_parts)
                )
            anomalous = score >= self.rules.threshold[slots]
            # Muted readings and those in a maintenance window are scored and counted, but
            # open no episode: for the episodes they count as normal. A fault that starts in
            # a window and goes on after it fires at its first anomalous reading after.
            suppressed = self.rules.suppression(slots, adm.ts[idx])
            opens = anomalous if suppressed is None else anomalous & (suppressed == 0)
            transitions = {
                i: (state, onset)
                for i, state, onset in self.episodes.step(slots, opens, adm.ts[idx])
            }
            if suppressed is not None or self.held.active[slots].any():
                self._hold(adm, idx, anomalous, suppressed, (expected, lower, upper, score), result)

            readings = adm.readings
            if not transitions:  # the common case: no episode starts or ends
                result.scored.extend(
                    map(
                        Scored,
                        [readings[j] for j in idx.tolist()],
                        expected.tolist(),
                        lower.tolist(),
                        upper.tolist(),
                        score.tolist(),
                        anomalous.tolist(),
                    )
                )
                continue
            for i, (j, e, lo, up, sc, anom) in enumerate(
                zip(
                    idx.tolist(),
                    expected.tolist(),
                    lower.tolist(),
                    upper.tolist(),
                    score.tolist(),
                    anomalous.tolist(),
                    strict=True,
                )
            ):
                change = transitions.get(i)
                if change is None:
                    result.scored.append(Scored(readings[j], e, lo, up, sc, anom))
                    continue
                firing = change[0] == "firing"
                scored = Scored(readings[j], e, lo, up, sc, anom, firing)
                result.scored.append(scored)
                slot = int(slots[i])
                if firing:
                    self.episode_signal[slot] = self.scorer.last_signal[i]
                signal = SIGNALS[int(self.episode_signal[slot])]
                result.events.append(self._event(scored, *change, signal))

    def _judge_devices(
        self,
        adm: _Admitted,
        idx: np.ndarray,
        scaled: np.ndarray,
        windows: np.ndarray,
        window_ts: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The device models' view of one round: (judged, z, expected, sigma), scaled
        units; None when no reading of the round was judged."""
        readings = [adm.readings[j] for j in idx.tolist()]
        z, expected, sigma = self.device_judge.judge(readings, scaled, windows, window_ts)
        on = np.isfinite(z)
        if not on.any():
            return None
        return on, np.where(on, z, 0.0), expected, sigma

    def _relate(
        self, slots: np.ndarray, ts: np.ndarray, scaled: np.ndarray, residual: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The device view of one reading per slot: the forecast residual left once the
        device's other residuals at the same timestamp are accounted for, and the deviation
        of the value from what the other values imply (as z and as a residual); the
        residual as it was and NaN for readings without related sensors present."""
        rows, pos = self.dev_row[slots], self.dev_pos[slots]
        levels, residuals = self.relations
        suspect = self.episodes.active[slots]
        relation_resid, relation_z = levels.observe(rows, pos, ts, scaled, suspect)
        left, _ = residuals.observe(rows, pos, ts, residual, suspect)
        return np.where(np.isfinite(left), left, residual), relation_z, relation_resid

    def _hold(
        self,
        adm: _Admitted,
        idx: np.ndarray,
        anomalous: np.ndarray,
        suppressed: np.ndarray | None,
        band: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        result: BatchResult,
    ) -> None:
        """Follow the episodes the rules keep back, one reading per slot of a round.

        A kept-back episode opens on a suppressed anomalous reading of a series with no
        open episode, and is counted once (`Suppressed`, the `firing` event it would have
        been). It ends like any episode, or with the series' first unsuppressed reading
        (the window is over: from then on the real episodes decide).
        """
        slots = adm.slots[idx]
        codes = np.zeros(slots.size, np.int8) if suppressed is None else suppressed
        free = codes == NOT_SUPPRESSED
        if free.any():
            for slot in slots[free & self.held.active[slots]].tolist():
                self.held.reset(slot)
        pos = np.flatnonzero(~free)
        if not pos.size:
            return
        wanted = anomalous[pos] & ~self.episodes.active[slots[pos]]
        for i, state, onset in self.held.step(slots[pos], wanted, adm.ts[idx[pos]]):
            if state != "firing":
                continue
            k = int(pos[i])
            reading = adm.readings[int(idx[k])]
            expected, lower, upper, score = (float(a[k]) for a in band)
            scored = Scored(reading, expected, lower, upper, score, True)
            signal = SIGNALS[int(self.scorer.last_signal[k])]
            event = self._event(scored, "firing", onset, signal)
            result.suppressed.append(Suppressed(event, SUPPRESS_REASONS[codes[k]]))

    def _event(self, scored: Scored, state: str, onset: float, signal: str) -> AlertEvent:
        r = scored.reading
        base = event_id(r.key, onset)
        slot = self.store.slot(r.key)
        rules = self.rules
        return AlertEvent(
            id=base if state == "firing" else f"{base}-resolved",
            state=state,  # type: ignore[arg-type]
            device=r.device,
            metric=r.metric,
            ts=r.ts,
            value=r.value,
            expected=scored.expected,
            lower=scored.lower,
            upper=scored.upper,
            score=scored.score,
            threshold=self.config.threshold if slot is None else float(rules.threshold[slot]),
            signal=signal,
            severity=None if slot is None else rules.severity(slot),
            labels=NO_LABELS if slot is None else rules.labels(slot),
        )

    # -- checkpoints -------------------------------------------------------------------------

    def _slot_arrays(self) -> dict[str, np.ndarray]:
        """Every per-slot state array outside the window store, by checkpoint name."""
        sc = self.scorer
        return {
            "offset": self.offset,
            "scale": self.scale,
            "has_scale": self.has_scale,
            "err_mean": self.errors.mean,
            "err_var": self.errors.var,
            "recent_error_ring": sc.recent_error.ring,
            "recent_error_total": sc.recent_error.total,
            "recent_error_count": sc.recent_error.count,
            "recent_value_ring": sc.recent_value.ring,
            "recent_value_total": sc.recent_value.total,
            "recent_value_count": sc.recent_value.count,
            "error_run_mean": sc.error_run.mean,
            "error_run_var": sc.error_run.var,
            "value_run_mean": sc.value_run.mean,
            "value_run_var": sc.value_run.var,
            "low": sc.low,
            "high": sc.high,
            "seen": sc.seen,
            "trusted_stats": sc.trusted_stats,
            "trusted_range": sc.trusted_range,
            "flat_run": sc.repeat_run,
            "flat_longest_run": sc.longest_repeat_run,
            "repeat_rate": sc.repeat_rate,
            "relation_ring": sc.recent_relation.ring,
            "relation_total": sc.recent_relation.total,
            "relation_count": sc.recent_relation.count,
            "relation_run_mean": sc.relation_run.mean,
            "relation_run_var": sc.relation_run.var,
            "relation_seen": sc.relation_seen,
            "sustained": sc.sustained,
            "gap": self.gap,
            "silent": self.silent,
            "episode_signal": self.episode_signal,
            "silent_suppressed": self.silent_suppressed,
            **self.episodes.arrays(),
            **self.held.arrays("held"),
        }

    def snapshot(self) -> dict[str, np.ndarray]:
        """Every active series' state (windows, scales, score statistics, episodes)."""
        state = self.store.state()
        slots = np.array([self.store.slot(str(k)) for k in state["keys"]], dtype=np.int64)
        state.update(
            format=np.array(CHECKPOINT_FORMAT),
            model_version=np.array(self.artifact.version),
            window_len=np.array(self.window_len),
            short_window=np.array(self.config.short_window),
        )
        for name, array in self._slot_arrays().items():
            state[name] = array[slots].copy()
        state.update(self.scorer.seasonal_errors.state(slots))
        for prefix, relations in zip(_RELATION_PREFIXES, self.relations, strict=True):
            rows = relations.slot_state(self.dev_row[slots], self.dev_pos[slots])
            state.update({f"{prefix}_{k}": v for k, v in rows.items()})
        rings = [self.seasonal_rings.rings.get(int(slot)) for slot in slots]
        width = max((r.size for r in rings if r is not None), default=0)
        state["seasonal_ring"] = np.zeros((len(rings), width))
        state["seasonal_count"] = np.zeros(len(rings), dtype=np.int64)
        # The period each ring was kept for: a model with another period starts it afresh.
        state["seasonal_period"] = np.zeros(len(rings), dtype=np.int64)
        for i, (slot, ring) in enumerate(zip(slots.tolist(), rings, strict=True)):
            if ring is not None:
                state["seasonal_ring"][i, : ring.size] = ring
                state["seasonal_count"][i] = self.seasonal_rings.count[slot]
                state["seasonal_period"][i] = ring.size
        return state

    def restore(self, state: dict[str, np.ndarray]) -> int:
        """Load a `snapshot`; raises ValueError when it does not fit this core's config.

        A snapshot of another model version is carried over first (`detector.model_carry`,
        with `carry_errors` as the error rule); `last_carry` then says what that did.
        """
        if int(state["format"]) != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {int(state['format'])} is not supported")
        if int(state["short_window"]) != self.config.short_window:
            raise ValueError("checkpoint short_window differs from the configured one")
        self.last_carry = None
        if str(state["model_version"]) != self.artifact.version:
            state, self.last_carry = carry_over(state, self.artifact, self.carry_errors)
        if int(state["window_len"]) != self.window_len:
            raise ValueError("checkpoint window length differs from the model's")
        missing = [
            name
            for name in [
                *self._slot_arrays(),
                *SeasonalErrors.STATE,
                "seasonal_ring",
                "seasonal_count",
            ]
            if name not in state and name not in _OPTIONAL_STATE
        ]
        if missing:
            raise ValueError(f"checkpoint lacks {', '.join(missing)}")
        slots: list[int] = []
        for key in state["keys"].tolist():
            slot = self._allocate(str(key))
            if slot is None:
                break  # more series than max_series: the rest warm up again
            slots.append(slot)
        rows = np.array(slots, dtype=np.int64)
        for name, array in self._slot_arrays().items():
            if name in state:  # an optional one absent keeps the value seeded at allocation
                array[rows] = state[name][: len(slots)]
        if "seasonal_period" in state:
            # A period the artifact does not give (a series a new model was not trained on)
            # is kept: its seasonal forecast is still the value one period ago.
            for slot, period in zip(slots, state["seasonal_period"].tolist(), strict=False):
                if period and slot not in self.seasonal_rings.rings:
                    self._set_period(slot, int(period))
        self.scorer.seasonal_errors.restore(rows, state)
        for i, slot in enumerate(slots):
            ring = self.seasonal_rings.rings.get(slot)
            if ring is not None and state["seasonal_ring"].shape[1] >= ring.size:
                ring[:] = state["seasonal_ring"][i, : ring.size]
                self.seasonal_rings.count[slot] = int(state["seasonal_count"][i])
        self.store.restore_rows(slots, state)
        rows_ = np.array(slots, dtype=np.int64)
        for prefix, relations in zip(_RELATION_PREFIXES, self.relations, strict=True):
            names = [f"{prefix}_{k}" for k in ("pos", "mean", "cov", "seen")]
            if all(n in state for n in names):  # older checkpoints: devices learn afresh
                per_series = {n.split("_", 1)[1]: state[n][: len(slots)] for n in names}
                relations.restore_slots(self.dev_row[rows_], self.dev_pos[rows_], per_series)
        return len(slots)
