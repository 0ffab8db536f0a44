"""Alerting calibrated to the plant: how sensitive the detector is, chosen on held-out history.

The detection core scores a reading by the largest of its likelihood deviations (z, see
`detector.engine.scoring`), or 1 when a certain signal fires (a value outside its range, a stuck
sensor). A fixed z threshold suits no plant: each has its own share of normal events that
look odd (shift changes, planned stops, new products). So training replays the held-out end
of the history through the very core the worker runs, records every reading's z, and picks
the smallest divisor of z (`z_scale` >= 1) at which that normal history raises at most
`budget` alerts per series per day, counting alerts as the worker does (episodes with
hysteresis and a quiet period). One divisor for all series (pooled): per-series divisors
fitted to a few days each would follow the noise of the few largest normal events.

The divisor is chosen per signal (`calibrate_signals`): each signal that fires on normal
history at all gets an equal share of the budget and the smallest divisor that keeps it
within its share. Signals differ in how heavy their normal tails are: a device model's
deviation at a machine's start-up is a rare, large event, the mean of its deviations over
ten readings is not; one pooled divisor set by the heaviest tail left the others blunt
(measured: a noise burst's error likelihood of 10 below a divisor set by start-ups at 15).
The certain signals (range, flatline) take no divisor; their alerts come off the budget
first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.engine.artifact import Artifact
from detector.engine.core import DetectionCore
from detector.engine.decision import EpisodeTracker
from detector.engine.detection_config import DetectionConfig
from detector.engine.forecaster import Forecaster
from detector.engine.readings import Reading
from detector.engine.scoring import CERTAIN, SIGNALS, tail_score

Trace = Sequence[tuple[np.ndarray, ...]]
"""What `DetectionCore.trace` collects: per scored round (slots, ts, z, flag, signal) and,
when its scorer records them, each signal's deviation (n, len(SIGNALS))."""

MAX_Z_SCALE = 1e6
DEFAULT_BUDGET = 0.05
"""Alerts per series per day that normal history may raise (one every 20 series-days)."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """The chosen divisor and what the held-out history raised with it."""

    z_scale: float
    alerts: int
    alerts_at_default: int
    allowed: float
    series: int
    days: float
    reachable: bool
    """False when the certain signals alone (range, flatline) exceed the budget: no divisor
    can meet it, and `z_scale` is the largest tried."""
    signal_scales: dict[str, float] | None = None
    """Per-signal divisors (`calibrate_signals`); None for one pooled `z_scale`."""

    @property
    def alerts_per_series_day(self) -> float:
        return self.alerts / max(self.series * self.days, 1e-9)

    def to_dict(self, budget: float) -> dict[str, object]:
        return {
            "budget": budget,
            "z_scale": self.z_scale,
            **({"z_scales": self.signal_scales} if self.signal_scales is not None else {}),
            "heldout": {
                "series": self.series,
                "days": round(self.days, 4),
                "alerts": self.alerts,
                "alerts_per_series_day": round(self.alerts_per_series_day, 5),
                "alerts_without_calibration": self.alerts_at_default,
                "budget_reachable": self.reachable,
            },
        }


def count_alerts(trace: Trace, z_scale: float, config: DetectionConfig, capacity: int) -> int:
    """Firing alerts the traced readings raise when z is divided by `z_scale`."""
    tracker = EpisodeTracker(capacity, config.resolve_after, config.quiet_period)
    fired = 0
    for slots, ts, z, flag, *_ in trace:
        anomalous = flag | (tail_score(z / z_scale) >= config.threshold)
        if anomalous.any() or tracker.active[slots].any():
            fired += sum(state == "firing" for _, state, _ in tracker.step(slots, anomalous, ts))
    return fired


def calibrate(
    trace: Trace, config: DetectionConfig, budget: float, series: int, days: float
) -> Calibration:
    """The smallest z divisor (>= 1) at which `trace` raises at most `budget` alerts per
    series per day; bisection in log scale to 1 % (alerts fall as the divisor grows)."""
    capacity = 1 + max((int(s.max()) for s, *_ in trace if s.size), default=0)
    allowed = budget * series * days

    def alerts(scale: float) -> int:
        return count_alerts(trace, scale, config, capacity)

    at_one = alerts(1.0)
    if at_one <= allowed:
        return Calibration(1.0, at_one, at_one, allowed, series, days, True)
    low, high = 1.0, 2.0
    high_alerts = alerts(high)
    while high_alerts > allowed and high < MAX_Z_SCALE:
        low, high = high, min(high * 4.0, MAX_Z_SCALE)
        high_alerts = alerts(high)
    if high_alerts > allowed:
        return Calibration(high, high_alerts, at_one, allowed, series, days, False)
    while high / low > 1.01:
        mid = float(np.sqrt(low * high))
        got = alerts(mid)
        if got <= allowed:
            high, high_alerts = mid, got
        else:
            low = mid
    return Calibration(high, high_alerts, at_one, allowed, series, days, True)


def calibrate_signals(
    trace: Trace, config: DetectionConfig, budget: float, series: int, days: float
) -> Calibration:
    """One divisor per signal, each the smallest that keeps the signal alone within an
    equal share of what the certain signals leave of the budget (see the module's
    docstring); the alerts reported are those of all signals together."""
    capacity = 1 + max((int(s.max()) for s, *_ in trace if s.size), default=0)
    allowed = budget * series * days
    no_flag = [np.zeros(len(row[0]), dtype=bool) for row in trace]
    zeros = [np.zeros(len(row[0])) for row in trace]
    certain_only = [(r[0], r[1], z, r[3]) for r, z in zip(trace, zeros, strict=True)]
    certain = count_alerts(certain_only, 1.0, config, capacity)
    at_one = count_alerts(trace, 1.0, config, capacity)
    firing: dict[int, list[tuple[np.ndarray, ...]]] = {}
    for k in range(len(SIGNALS)):
        if k in CERTAIN:
            continue
        alone: list[tuple[np.ndarray, ...]] = [
            (r[0], r[1], r[5][:, k], f) for r, f in zip(trace, no_flag, strict=True) if len(r) > 5
        ]
        if alone and count_alerts(alone, 1.0, config, capacity) > 0:
            firing[k] = alone
    share = max(allowed - certain, 0.0) / max(len(firing), 1)
    scales = np.ones(len(SIGNALS))
    for k, alone in firing.items():
        scales[k] = calibrate(alone, config, share / max(series * days, 1e-9), series, days).z_scale
    combined = [
        (r[0], r[1], np.max(r[5] / scales, axis=1) if len(r) > 5 else r[2], r[3]) for r in trace
    ]
    alerts = count_alerts(combined, 1.0, config, capacity)
    return Calibration(
        1.0,
        alerts,
        at_one,
        allowed,
        series,
        days,
        certain <= allowed,
        # Every signal calibrated, those that never fired at 1: a signal an artifact does not
        # name was not there when it was calibrated, and the core leaves it off.
        {SIGNALS[k]: float(scales[k]) for k in range(len(SIGNALS)) if k not in CERTAIN},
    )


PRIME_READINGS = 10_000
"""Readings of each series' training part replayed before the held-out part, so the core's
long-run statistics and device relations are what a worker running for a week has (a week
at one reading a minute)."""


@dataclass(frozen=True, slots=True)
class HeldOut:
    """Raw readings of every series, in one time-ordered stream, and where each series'
    held-out part begins."""

    ts: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    heldout_from: dict[str, float]
    """Series key -> timestamp of its first held-out reading."""
    heldout_until: dict[str, float]
    """Series key -> timestamp of its last reading."""

    @property
    def series_days(self) -> float:
        """Days of held-out history summed over series."""
        spans = (self.heldout_until[k] - t0 for k, t0 in self.heldout_from.items())
        return sum(max(span, 0.0) for span in spans) / 86_400.0


def heldout_stream(
    series: dict[str, tuple[np.ndarray, np.ndarray]], n_train: dict[str, int]
) -> HeldOut:
    """The last `PRIME_READINGS` of each series' training part and all its held-out part,
    merged in time order (ties keep series order, as a device's payload delivers them)."""
    ts_parts, key_parts, value_parts = [], [], []
    heldout_from: dict[str, float] = {}
    heldout_until: dict[str, float] = {}
    for key, cut in n_train.items():
        ts, values = series[key]
        if cut >= ts.size:
            continue
        start = max(0, cut - PRIME_READINGS)
        ts_parts.append(np.asarray(ts[start:], dtype=np.float64))
        value_parts.append(np.asarray(values[start:], dtype=np.float64))
        key_parts.append(np.full(ts.size - start, key, dtype=object))
        heldout_from[key] = float(ts[cut])
        heldout_until[key] = float(ts[-1])
    if not ts_parts:
        return HeldOut(np.empty(0), np.empty(0, dtype=object), np.empty(0), {}, {})
    ts = np.concatenate(ts_parts)
    order = np.argsort(ts, kind="stable")
    return HeldOut(
        ts[order],
        np.concatenate(key_parts)[order],
        np.concatenate(value_parts)[order],
        heldout_from,
        heldout_until,
    )


REPLAY_TIMESTAMPS = 64
"""Timestamps per `process` call of the calibration replay. The core scores a batch in
rounds (the k-th reading of each series), so a reading sees what it would see arriving alone;
only the silence check runs per call, and silence is not part of the calibration."""


def trace_heldout(core: DetectionCore, stream: HeldOut) -> Trace:
    """Replay `stream` through `core` (whole timestamps per call, as devices' payloads
    arrive) and return the trace of the held-out readings only."""
    core.trace = []
    core.scorer.record_parts = True
    bounds = np.flatnonzero(np.diff(stream.ts)) + 1
    starts = np.concatenate([[0], bounds])[::REPLAY_TIMESTAMPS]
    ends = np.concatenate([starts[1:], [stream.ts.size]])
    keys = [tuple(str(k).split("/", 1)) for k in stream.keys.tolist()]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        batch = [
            Reading(keys[i][0], keys[i][1], float(stream.ts[i]), float(stream.values[i]))
            for i in range(a, b)
        ]
        if batch:
            core.process(batch, now=float(stream.ts[b - 1]))
    starts = np.full(core.store.capacity, np.inf)
    for key, t0 in stream.heldout_from.items():
        slot = core.store.slot(key)
        if slot is not None:
            starts[slot] = t0
    trace, core.trace = core.trace, None
    core.scorer.record_parts = False
    out = []
    for slots, ts, *columns in trace:
        keep = ts >= starts[slots]
        if keep.any():
            out.append((slots[keep], ts[keep], *(c[keep] for c in columns)))
    return out


def calibrate_artifact(
    artifact: Artifact,
    forecaster: Forecaster,
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    n_train: dict[str, int],
    budget: float,
) -> Calibration:
    """Calibrate `artifact` (with its forecaster) on the held-out part of `series` (each
    series from index ``n_train[key]`` on), with the detection defaults the worker uses."""
    core = DetectionCore(artifact, forecaster)
    stream = heldout_stream(series, n_train)
    trace = trace_heldout(core, stream)
    n = max(len(stream.heldout_from), 1)
    return calibrate_signals(trace, core.config, budget, n, stream.series_days / n)
