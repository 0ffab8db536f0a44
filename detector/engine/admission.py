"""Admitting a batch of readings: a slot for each series, and the order checks.

A reading is taken when its value is in range and its ts is after its series' order bound
(`detector.engine.windows`); a repeat of a reading the series already has is a ``duplicate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from detector.engine.events import BatchResult, Dropped
from detector.engine.readings import DUPLICATE, OUT_OF_ORDER, OUT_OF_RANGE, TOO_MANY_SERIES, Reading
from detector.engine.windows import WindowStore

MAX_ABS_VALUE = 1e15
"""Readings whose value is larger in magnitude (or not finite) are dropped as
``out_of_range``. Far beyond any physical sensor, and small enough that the statistics stay
finite whatever the series' scale (a single 1e308 once overflowed them, and the series never
alerted again)."""


@dataclass(slots=True)
class Admitted:
    """The readings of one batch the core accepted, as parallel arrays."""

    readings: list[Reading]
    slots: np.ndarray
    values: np.ndarray
    ts: np.ndarray
    rank: np.ndarray  # k for the k-th reading of its series in this batch


def _slots(
    store: WindowStore, allocate: Callable[[str], int | None], readings: Sequence[Reading]
) -> list[int | None]:
    """Pass 1 of `admit`: the slot of every reading (None: no room; -1: out of range, never
    given a slot), allocating in input order."""
    slot_of = store.slot
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
            slot = allocate(key)
        slot_list.append(slot)
    return slot_list


def _taken_by_slot(
    slots: list[int], stamps: list[float], values: list[float]
) -> dict[int, dict[float, float]]:
    """The readings a batch has taken so far, as slot -> {ts: value} (built only when a
    reading needs checking against them: repeats are rare)."""
    out: dict[int, dict[float, float]] = {}
    for slot, ts, value in zip(slots, stamps, values, strict=True):
        out.setdefault(slot, {})[ts] = value
    return out


def admit(
    store: WindowStore,
    allocate: Callable[[str], int | None],
    readings: Sequence[Reading],
    result: BatchResult,
    seen_at: float,
) -> Admitted | None:
    """The readings of a batch the core takes, in input order; the others are added to
    `result.dropped` with their reason. `allocate` gives a new series its slot (None: no
    room). None when no reading was taken."""
    slot_list = _slots(store, allocate, readings)
    known = list(set(slot_list) - {None, -1})
    # The stores' order bound and newest ts of every slot in one read each, not a numpy
    # scalar read per reading.
    rows = np.array(known, dtype=np.int64)
    stored = dict(
        zip(
            known,
            zip(store.order_bounds(rows).tolist(), store.newest_ts(rows).tolist(), strict=True),
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
            repeat = _repeat(store, slot, ts, value, taken)
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
    return Admitted(
        readings=kept,
        slots=np.array(slots, dtype=np.int64),
        values=np.array(values, dtype=np.float64),
        ts=np.array(stamps, dtype=np.float64),
        rank=np.array(ranks, dtype=np.int64),
    )


def _repeat(
    store: WindowStore, slot: int, ts: float, value: float, taken: dict[int, dict[float, float]]
) -> bool | None:
    """Whether series `slot` already has a reading at `ts` (this batch's, or one in its
    window): True with this value, False with another, None when it has none."""
    in_batch = taken.get(slot, {}).get(ts)
    if in_batch is not None:
        return in_batch == value
    return store.repeat_of(slot, ts, value)
