"""From a batch's forecasts to scores, episodes and alert events, one round at a time.

Round k holds the k-th scored reading of each series in the batch, so each series' state
learns its readings in time order while a round is scored as one vectorised step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from detector.engine.admission import Admitted
from detector.engine.alert_building import episode_event, ruling
from detector.engine.events import AlertState, BatchResult, Scored, Suppressed
from detector.engine.model_inputs import ModelInputs
from detector.engine.rule_policy import NOT_SUPPRESSED, SUPPRESS_REASONS
from detector.engine.scoring import SIGNALS

if TYPE_CHECKING:
    from detector.engine.core import DetectionCore


@dataclass(slots=True)
class _View:
    """One round's readings as the signals see them (scaled units) and the band shown to
    operators (raw units). The relation arrays are None without device relations;
    `judged` marks readings a device model judged (None: none was)."""

    scaled: np.ndarray
    residual: np.ndarray
    relation_z: np.ndarray | None
    relation_resid: np.ndarray | None
    judged: np.ndarray | None
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def score_rounds(
    core: DetectionCore,
    adm: Admitted,
    inputs: ModelInputs,
    forecast: np.ndarray,
    result: BatchResult,
) -> None:
    """Score every reading the model forecast, follow its series' episodes and add the
    scored readings, events and suppressed alerts to `result`."""
    ranks = adm.rank[inputs.owners]
    for k in range(int(ranks.max()) + 1):
        rows = np.flatnonzero(ranks == k)
        _score_round(core, adm, inputs, rows, forecast[rows], result)


def _view(
    core: DetectionCore, adm: Admitted, inputs: ModelInputs, rows: np.ndarray, forecast: np.ndarray
) -> _View:
    cfg = core.config
    idx = inputs.owners[rows]
    slots = adm.slots[idx]
    scales = core.scales
    scaled = scales.scaled(slots, adm.values[idx])
    residual = scaled - forecast
    relation_z = relation_resid = None
    if cfg.relate_devices:
        suspect = core.episodes.is_open(slots)
        residual, relation_z, relation_resid = core.relations.relate(
            slots, adm.ts[idx], scaled, residual, suspect
        )
    low, high = core.errors.band(slots, cfg.band_sigmas)
    # The forecast, corrected by what the device's other sensors say now.
    expected = scales.to_raw(slots, scaled - residual)
    lower = expected + scales.to_raw_width(slots, low)
    upper = expected + scales.to_raw_width(slots, high)
    view = _View(scaled, residual, relation_z, relation_resid, None, expected, lower, upper)
    if cfg.relate_devices and inputs.past is not None:
        past_values, past_ts = inputs.past[0][rows], inputs.past[1][rows]
        readings = [adm.readings[j] for j in idx.tolist()]
        z, d_expected, d_sigma = core.device_judge.judge(readings, scaled, past_values, past_ts)
        on = np.isfinite(z)
        if on.any():
            _judged_by_device(view, on, np.where(on, z, 0.0), d_expected, d_sigma, core, slots)
    return view


def _judged_by_device(
    view: _View,
    on: np.ndarray,
    dz: np.ndarray,
    d_expected: np.ndarray,
    d_sigma: np.ndarray,
    core: DetectionCore,
    slots: np.ndarray,
) -> None:
    """The device model's deviation, in its own units, is what every device-level signal
    and the error likelihood judge from here on, and its band is the one shown."""
    assert view.relation_z is not None and view.relation_resid is not None
    view.judged = on
    view.residual = np.where(on, dz, view.residual)
    view.relation_z = np.where(on, dz, view.relation_z)
    view.relation_resid = np.where(on, dz, view.relation_resid)
    centre = core.scales.to_raw(slots, d_expected)
    half = core.scales.to_raw_width(slots, core.config.band_sigmas * d_sigma)
    view.expected = np.where(on, centre, view.expected)
    view.lower = np.where(on, centre - half, view.lower)
    view.upper = np.where(on, centre + half, view.upper)


def _score_round(
    core: DetectionCore,
    adm: Admitted,
    inputs: ModelInputs,
    rows: np.ndarray,
    forecast: np.ndarray,
    result: BatchResult,
) -> None:
    idx = inputs.owners[rows]
    slots = adm.slots[idx]
    ts = adm.ts[idx]
    v = _view(core, adm, inputs, rows, forecast)
    core.errors.update(slots, v.residual)
    seasonal_forecast = core.seasonal.forecast_and_push(slots, v.scaled)
    repeated = adm.values[idx] == inputs.previous[rows]
    sc = core.scorer
    score = sc.score(
        slots,
        v.scaled,
        v.residual,
        v.scaled - seasonal_forecast,
        repeated,
        v.relation_z,
        core.scales.z_scales(slots),
        v.relation_resid,
        core.signal_scales,
        v.judged,
    )
    if core.trace is not None:
        core.trace.append((slots, ts, sc.last_z, sc.last_flag, sc.last_signal, sc.last_parts))
    anomalous = score >= core.rules.thresholds(slots)
    # Muted readings and those in a maintenance window are scored and counted, but open no
    # episode: for the episodes they count as normal. A fault that starts in a window and
    # goes on after it fires at its first anomalous reading after.
    suppressed = core.rules.suppression(slots, ts)
    opens = anomalous if suppressed is None else anomalous & (suppressed == 0)
    transitions = {i: (state, onset) for i, state, onset in core.episodes.step(slots, opens, ts)}
    band = (v.expected, v.lower, v.upper, score)
    if suppressed is not None or core.held.is_open(slots).any():
        _hold(core, adm, idx, anomalous, suppressed, band, result)
    _emit(core, adm, idx, band, anomalous, transitions, result)


def _emit(
    core: DetectionCore,
    adm: Admitted,
    idx: np.ndarray,
    band: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    anomalous: np.ndarray,
    transitions: dict[int, tuple[AlertState, float]],
    result: BatchResult,
) -> None:
    """The round's scored readings, and the events of the episodes that began or ended."""
    readings = adm.readings
    columns = (*(a.tolist() for a in band), anomalous.tolist())
    if not transitions:  # the common case: no episode starts or ends
        result.scored.extend(map(Scored, [readings[j] for j in idx.tolist()], *columns))
        return
    slots = adm.slots[idx]
    episodes = core.episodes
    for i, (j, e, lo, up, sc, anom) in enumerate(zip(idx.tolist(), *columns, strict=True)):
        change = transitions.get(i)
        if change is None:
            result.scored.append(Scored(readings[j], e, lo, up, sc, anom))
            continue
        state, onset = change
        firing = state == "firing"
        scored = Scored(readings[j], e, lo, up, sc, anom, firing)
        result.scored.append(scored)
        slot = int(slots[i])
        if firing:
            episodes.set_signal(slot, int(core.scorer.last_signal[i]))
        signal = SIGNALS[episodes.signal_of(slot)]
        rule = ruling(core.rules, slot, core.config.threshold)
        result.events.append(episode_event(scored, state, onset, signal, rule))


def _hold(
    core: DetectionCore,
    adm: Admitted,
    idx: np.ndarray,
    anomalous: np.ndarray,
    suppressed: np.ndarray | None,
    band: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    result: BatchResult,
) -> None:
    """Follow the episodes the rules keep back, one reading per slot of a round.

    A kept-back episode opens on a suppressed anomalous reading of a series with no open
    episode, and is counted once (`Suppressed`, the `firing` event it would have been). It
    ends like any episode, or with the series' first unsuppressed reading (the window is
    over: from then on the real episodes decide).
    """
    held = core.held
    slots = adm.slots[idx]
    codes = np.zeros(slots.size, np.int8) if suppressed is None else suppressed
    free = codes == NOT_SUPPRESSED
    if free.any():
        for slot in slots[free & held.is_open(slots)].tolist():
            held.reset(slot)
    pos = np.flatnonzero(~free)
    if not pos.size:
        return
    wanted = anomalous[pos] & ~core.episodes.is_open(slots[pos])
    for i, state, onset in held.step(slots[pos], wanted, adm.ts[idx[pos]]):
        if state != "firing":
            continue
        k = int(pos[i])
        reading = adm.readings[int(idx[k])]
        expected, lower, upper, score = (float(a[k]) for a in band)
        scored = Scored(reading, expected, lower, upper, score, True)
        signal = SIGNALS[int(core.scorer.last_signal[k])]
        rule = ruling(core.rules, int(slots[k]), core.config.threshold)
        event = episode_event(scored, "firing", onset, signal, rule)
        result.suppressed.append(Suppressed(event, SUPPRESS_REASONS[codes[k]]))
