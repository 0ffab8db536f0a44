"""A detection core's state as a dict of arrays, one row per series, and back.

The core's parts (`detector.engine.slot_state.SlotState`) each write and read their own arrays;
this module adds what belongs to the snapshot as a whole (the format, the model and the
settings it was taken under, the series keys) and checks them on the way back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from detector.engine.model_carry import carry_over
from detector.engine.slot_state import check_versions, missing_names, versions

if TYPE_CHECKING:
    from detector.engine.core import DetectionCore

CHECKPOINT_FORMAT = 1


def take_snapshot(core: DetectionCore) -> dict[str, np.ndarray]:
    """Every active series' state, by snapshot name, with each part's version."""
    keys = core.store.keys()
    slots = np.array([core.store.slot(k) for k in keys], dtype=np.int64)
    state: dict[str, np.ndarray] = {
        "keys": np.array(keys, dtype=object),
        "format": np.array(CHECKPOINT_FORMAT),
        "model_version": np.array(core.artifact.version),
        "window_len": np.array(core.window_len),
        "short_window": np.array(core.config.short_window),
    }
    parts = core.parts
    for part in parts:
        state.update(part.snapshot(slots))
    state.update(versions(parts, len(keys)))
    return state


def restore_snapshot(core: DetectionCore, state: dict[str, np.ndarray]) -> int:
    """Load `state` into a core (normally an empty one); returns how many series it took
    (fewer than the snapshot's when they exceed ``max_series``). Raises ValueError, before
    anything is loaded, when the snapshot does not fit the core."""
    if int(state["format"]) != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {int(state['format'])} is not supported")
    if int(state["short_window"]) != core.config.short_window:
        raise ValueError("checkpoint short_window differs from the configured one")
    parts = core.parts
    check_versions(parts, state)
    core.last_carry = None
    if str(state["model_version"]) != core.artifact.version:
        state, core.last_carry = carry_over(state, core.artifact, core.carry_errors)
    if int(state["window_len"]) != core.window_len:
        raise ValueError("checkpoint window length differs from the model's")
    missing = missing_names(parts, state)
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}")
    slots: list[int] = []
    for key in state["keys"].tolist():
        slot = core.allocate(str(key))
        if slot is None:
            break  # more series than max_series: the rest warm up again
        slots.append(slot)
    rows = np.array(slots, dtype=np.int64)
    for part in core.parts:
        part.restore(rows, state)
    return len(slots)
