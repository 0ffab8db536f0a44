"""The detection core: windows, batched forecasts, scoring and decisions. Pure, no I/O.

The worker (`iotad run`), offline replay / NAB evaluation (`iotad eval`) and the tests all
call `DetectionCore.process` with plain `Reading`s and get a `BatchResult` back.

Each series' state is spread over the core's parts (`parts`), each an owner of per-slot
arrays behind one contract (`detector.engine.slot_state.SlotState`): the core grows, resets,
snapshots and restores them by iterating over the parts, never by reaching into one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from detector.engine.admission import MAX_ABS_VALUE, admit
from detector.engine.alert_building import closing_events, ruling
from detector.engine.artifact import MAX_SIGNAL_DIVISOR, Artifact
from detector.engine.core_snapshot import CHECKPOINT_FORMAT, restore_snapshot, take_snapshot
from detector.engine.decision import EpisodeTracker
from detector.engine.detection_config import DetectionConfig
from detector.engine.device_judge import DeviceJudge
from detector.engine.events import ENDED, EVICTED, AlertEvent, BatchResult, Eviction
from detector.engine.forecaster import Forecaster
from detector.engine.model_carry import CarryReport, ErrorRule
from detector.engine.model_inputs import collect_windows
from detector.engine.readings import Reading
from detector.engine.rule_policy import SeriesRules
from detector.engine.rules import RuleSet
from detector.engine.scoring import SIGNALS, AnomalyScorer, ErrorTracker
from detector.engine.scoring_rounds import score_rounds
from detector.engine.seasonal_forecast import SeasonalForecast
from detector.engine.series_relations import SeriesRelations
from detector.engine.series_scales import SeriesScales
from detector.engine.silence import SilenceWatch
from detector.engine.slot_state import SlotState
from detector.engine.windows import WindowStore

__all__ = ["CHECKPOINT_FORMAT", "MAX_ABS_VALUE", "DetectionCore"]


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
        self.config = cfg = config or DetectionConfig()
        self.window_len = artifact.window_len
        self.features = artifact.features
        self.device_judge = DeviceJudge.from_artifact(artifact)
        # Device models need to know that a device's windows were taken together.
        keep_ts = len(artifact.features) > 1 or self.device_judge.active
        self.store = WindowStore(artifact.window_len, cfg.max_series, keep_ts=keep_ts)
        self._capacity = cap = self.store.capacity  # the slots every part holds
        self.scales = SeriesScales(cap)
        self.errors = ErrorTracker(cap, cfg.error_halflife, cfg.error_clip)
        self.scorer = AnomalyScorer(cap, cfg.scoring())
        self.seasonal = SeasonalForecast(self.scorer.seasonal_error_stats)
        self.episodes = EpisodeTracker(cap, cfg.resolve_after, cfg.quiet_period, keep_signal=True)
        # The episodes a mute or maintenance rule kept back, followed as the real ones would
        # be, so that each is counted once (`BatchResult.suppressed`), not once per reading.
        self.held = EpisodeTracker(
            cap, cfg.resolve_after, cfg.quiet_period, name="held", prefix="held", optional=True
        )
        self.silence = SilenceWatch(cap, cfg.silence_after, cfg.threshold)
        self.rules = SeriesRules(cap, cfg.threshold, rules)
        # One model of each device's values and one of its forecast residuals.
        self.relations = SeriesRelations(cap, cfg.error_clip, cfg.learn_readings)
        named = artifact.alert_signal_scales
        # A signal the artifact's calibration does not name came after it was calibrated:
        # undivided, it would spend a budget nobody measured, so it stays off (the largest
        # divisor an artifact may hold) until the model is retrained.
        self.signal_scales = (
            np.array([named.get(name, MAX_SIGNAL_DIVISOR) for name in SIGNALS]) if named else None
        )
        self.clock = -np.inf
        self.clock_points = np.empty(0)
        """The times the clock took in the current batch (and the clock before it)."""
        self.carry_errors: ErrorRule = "calibration"
        """How `restore` treats the error statistics of a snapshot of another model."""
        self.last_carry: CarryReport | None = None
        """What the last `restore` of another model's snapshot carried over (None: none)."""
        self.trace: list[tuple[np.ndarray, ...]] | None = None
        """When a list, each scored round appends (slots, ts, z, flag, signal): the input of
        alert calibration (`training.alerting`)."""

    @property
    def parts(self) -> tuple[SlotState, ...]:
        """Every owner of per-series state, the window store first."""
        return (
            self.store,
            self.scales,
            self.errors,
            *self.scorer.parts,
            self.seasonal,
            self.episodes,
            self.held,
            self.silence,
            self.rules,
            self.relations,
        )

    def state_bytes(self) -> int:
        """Memory the per-series state takes, in bytes (every part's arrays)."""
        return sum(part.nbytes() for part in self.parts)

    # -- series ------------------------------------------------------------------------------

    @property
    def active_series(self) -> int:
        return len(self.store)

    @property
    def warming_series(self) -> int:
        used = self.store.used_slots()
        return int(np.count_nonzero(~self.store.ready(used)))

    def allocate(self, key: str) -> int | None:
        """The slot of series `key`, a fresh one seeded from the artifact when it has none;
        None when `max_series` are active."""
        slot = self.store.slot(key)
        if slot is not None:
            return slot
        slot = self.store.allocate(key)  # grows the store when it must
        if slot is None:
            return None
        cap = self.store.capacity
        if cap > self._capacity:
            for part in self.parts[1:]:
                part.grow(cap)
            self._capacity = cap
        # A free slot holds every part's start values already (new rows are grown with
        # them, and `release` resets a slot it frees): only the seeds are left to set.
        self._seed(slot, key)
        return slot

    def _seed(self, slot: int, key: str) -> None:
        """Start a reset slot of series `key` from what the artifact knows of it."""
        if self.config.relate_devices:
            self.relations.attach(slot, key)
        self.rules.assign(slot, key)
        known = self.artifact.scale_for(key)
        self.scales.seed(slot, known, self.artifact.z_scale_for(key))
        value_range = None
        if known is not None and known.low is not None and known.high is not None:
            value_range = (
                (known.low - known.offset) / known.scale,
                (known.high - known.offset) / known.scale,
            )
        errors = self.artifact.errors_for(key)
        self.errors.seed(slot, errors)
        self.seasonal.set_period(slot, known.period if known is not None else None)
        # In scaled units a standard-scaled series has mean 0 and std 1; a min-max scaled one
        # spans [0, 1] (std of a uniform spread as the prior).
        trained = known is not None
        repeat_run = known.repeat_run if known is not None else None
        if self.artifact.scaling_method == "minmax":
            self.scorer.seed(slot, errors, 0.5, 12**-0.5, value_range, trained, repeat_run)
        else:
            self.scorer.seed(slot, errors, 0.0, 1.0, value_range, trained, repeat_run)

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

    def release(self, key: str) -> int | None:
        """Forget series `key` entirely: its slot is freed and every part's state of it
        reset (its device relations and seasonal ring included). Returns the slot it had,
        None when it had none. Open alerts are dropped unseen: `evict_idle` and
        `end_devices` resolve them first."""
        slot = self.store.release(key)
        if slot is not None:
            for part in self.parts[1:]:
                part.reset(slot)
        return slot

    def _release(self, key: str, at: float, reason: str) -> list[AlertEvent]:
        """`release` series `key`; returns the resolved events (stamped `at`, with
        `reason`) of the alerts still open on it."""
        slot = self.store.slot(key)
        if slot is None:
            return []
        events = closing_events(
            key,
            at,
            reason,
            self.store.last_value_of(slot),
            self.silence.open_onset(self.store, slot),
            self.episodes,
            slot,
            ruling(self.rules, slot, self.config.threshold),
        )
        self.release(key)
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

    def set_period(self, slot: int, period: int | None) -> None:
        """Give `slot` a fresh seasonal ring and error statistics for `period` (None: the
        series has no seasonal forecast)."""
        self.seasonal.set_period(slot, period)

    # -- the batch ---------------------------------------------------------------------------

    def process(self, readings: Sequence[Reading], now: float | None = None) -> BatchResult:
        """Take a batch of readings (any series, any order in time across series).

        Readings of one series must come in increasing `ts`; one whose ts is not after the
        series' order bound is dropped with reason ``out_of_order``, or ``duplicate`` when a
        reading with its ts and value is in the series' window (a redelivery). The order
        bound is the newest ts, but at most `detector.engine.windows.FUTURE_SLACK_S` ahead of `now`:
        a reading from the future cannot make the genuine ones after it out of order. A
        value beyond ``±MAX_ABS_VALUE`` (or a non-finite value or ts) is dropped as
        ``out_of_range``. All ready windows go to the forecaster in **one** `predict` call.
        `now` is the clock time (default: wall clock), for idle eviction and the order bound.

        Scored readings and events of one series come out in time order.
        """
        result = BatchResult(scored=[], events=[], dropped=[])
        seen_at = time.time() if now is None else now
        admitted = admit(self.store, self.allocate, readings, result, seen_at)
        if admitted is None:
            return result
        # The clock silence is judged by is the readings' time, never ahead of `now`: a
        # reading stamped in the future must not make every other series look silent.
        clock = admitted.ts[admitted.ts <= seen_at]
        self.clock_points = np.unique(np.append(clock, self.clock))
        inputs = collect_windows(self, admitted, seen_at, result)
        if inputs.owners.size:
            started = time.perf_counter()
            forecast = np.asarray(self.forecaster.predict(inputs.windows), dtype=np.float64)
            result.inference_s = time.perf_counter() - started
            result.model_batch = int(inputs.owners.size)
            score_rounds(self, admitted, inputs, forecast, result)
        self.clock = float(self.clock_points[-1])
        if self.silence.on:
            self.silence.sweep(self.store, self.rules, self.clock, result)
        return result

    # -- checkpoints -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, np.ndarray]:
        """Every active series' state (windows, scales, score statistics, episodes), by
        checkpoint name, with each part's version (``version_<part>``)."""
        return take_snapshot(self)

    def restore(self, state: dict[str, np.ndarray]) -> int:
        """Load a `snapshot`; raises ValueError when it does not fit this core's config, or
        holds a part in a version this code does not read.

        A snapshot of another model version is carried over first (`detector.engine.model_carry`,
        with `carry_errors` as the error rule); `last_carry` then says what that did.
        """
        return restore_snapshot(self, state)
