"""The model input of a batch: the window before each admitted reading, in rounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from detector.engine.admission import Admitted
from detector.engine.events import BatchResult
from detector.engine.features import model_input

if TYPE_CHECKING:
    from detector.engine.core import DetectionCore


@dataclass(slots=True)
class ModelInputs:
    """The stacked model input of every ready reading of a batch, and per row: the index of
    its reading in the `Admitted`, the series' previous reading (exact, for the flatline
    signal; the window is float32) and, when the artifact has device models, the scaled
    window and its timestamps (`past`, else None)."""

    windows: np.ndarray
    owners: np.ndarray
    previous: np.ndarray
    past: tuple[np.ndarray, np.ndarray] | None


def collect_windows(
    core: DetectionCore, adm: Admitted, seen_at: float, result: BatchResult
) -> ModelInputs:
    """Build the model input of every ready reading, pushing the readings into the windows.

    Readings are taken in rounds (round k = the k-th reading of each series in the batch)
    so that a reading's window holds exactly the readings before it, batch included. A
    round's silence is judged before its readings are pushed.
    """
    store, silence = core.store, core.silence
    inputs: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    previous: list[np.ndarray] = []
    past_values: list[np.ndarray] = []
    past_ts: list[np.ndarray] = []
    judging = core.device_judge.active
    for k in range(int(adm.rank.max()) + 1):
        idx = np.flatnonzero(adm.rank == k)
        slots = adm.slots[idx]
        ready = store.ready(slots)
        if ready.any():
            r_idx, r_slots = idx[ready], slots[ready]
            values, ts = store.windows(r_slots)
            core.scales.fit_missing(r_slots, values, core.artifact.scaling_method)
            scaled = core.scales.scaled(r_slots, values)
            core.scorer.seed_missing_ranges(r_slots, scaled)
            inputs.append(model_input(scaled, ts, core.features))
            owners.append(r_idx)
            previous.append(store.last_values(r_slots))
            if judging and ts is not None:
                past_values.append(scaled)
                past_ts.append(ts)
        result.warming += int(np.count_nonzero(~ready))
        if silence.on:
            silence.end_round(
                store, core.rules, slots, adm.ts[idx], adm.readings, idx, core.clock_points, result
            )
        silence.learn_gap(store, slots, adm.ts[idx])
        store.push(slots, adm.values[idx], adm.ts[idx], seen_at)
    if not owners:
        empty = np.empty((0, core.window_len, len(core.features)), np.float32)
        return ModelInputs(empty, np.empty(0, int), np.empty(0), None)
    past = (np.concatenate(past_values), np.concatenate(past_ts)) if past_ts else None
    return ModelInputs(
        np.concatenate(inputs), np.concatenate(owners), np.concatenate(previous), past
    )
