"""A hot swap without copying series one by one: the new core takes the old core's arrays.

`DetectionCore.restore(old.snapshot())` allocates and seeds every series again, one at a
time (measured: ~70 µs a series, 7 s for 100,000, while detection waits). A swap at a batch
boundary does not need that: `take_over` hands a copy of the old core's storage (windows, per-series
arrays, seasonal rings, device relations) to the new core and converts it in place with the
rules of `detector.engine.model_carry`, vectorised. The result equals the snapshot path's
(tests/detector/engine/test_model_takeover.py checks it); it needs the same window length and
detection settings, else the caller uses the snapshot path.

The new core works on a copy of the old core's storage (arrays and a few dicts), so the old
core is left as it was and keeps running should anything fail.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.engine.model_carry import CarryReport, carry_over

if TYPE_CHECKING:
    from detector.engine.core import DetectionCore

_ADOPTED = (
    "store",
    "scales",
    "errors",
    "scorer",
    "seasonal",
    "episodes",
    "held",
    "silence",
    "relations",
    "clock",
    "clock_points",
    "_capacity",
)
"""Everything per series (and the clock) a core keeps, by attribute: the owners of its parts
but the rules (the new core's own, assigned to every series again)."""
_CONVERTED_APART = frozenset({"windows", "seasonal", "relations", "rules"})
"""Parts converted in place (or re-assigned) rather than restored from the converted view."""


def can_take_over(new: DetectionCore, old: DetectionCore) -> bool:
    """Whether `new` can take `old`'s storage as it is (else: the snapshot path)."""
    return (
        new.window_len == old.window_len
        and new.config == old.config
        and new.active_series == 0
        and new.features == old.features
    )


def take_over(new: DetectionCore, old: DetectionCore) -> CarryReport:
    """Make `new` (fresh) run a copy of `old`'s series, their state carried over to its
    model (`old` is left as it was)."""
    if not can_take_over(new, old):
        raise ValueError("the cores differ in window or settings: restore a snapshot instead")
    store = old.store
    used = store.used_slots()
    keys = [str(store.key(int(slot))) for slot in used.tolist()]
    view: dict[str, np.ndarray] = {}
    for part in old.parts:
        if part.name not in ("windows", "relations"):
            view.update(part.snapshot(used))
    view.update(
        keys=np.array(keys, dtype=object),
        model_version=np.array(old.artifact.version),
        window_len=np.array(old.window_len),
    )
    converted, report = carry_over(view, new.artifact, new.carry_errors)
    had = view["has_scale"].astype(bool)
    a = np.where(had, view["scale"] / converted["scale"], 1.0)
    b = np.where(had, (view["offset"] - converted["offset"]) / converted["scale"], 0.0)
    # A copy (arrays, dicts and lists: a fraction of a second for 100,000 series), so that
    # the old core is untouched, and keeps running, whatever fails from here on. One memo
    # for all of it: parts that share an object (the seasonal forecast and the scorer share
    # the seasonal error statistics) share its copy.
    memo: dict[int, Any] = {}
    for name in _ADOPTED:
        setattr(new, name, _clone(getattr(old, name), memo))
    for part in new.parts:
        if part.name not in _CONVERTED_APART:
            part.restore(used, converted)
    new.scales.set_z_scales(used, [new.artifact.z_scale_for(k) for k in keys])
    # The rules the new core was built with (those in force), assigned to every series.
    new.rules.ensure_capacity(new.store.capacity)
    new.rules.reassign(zip(used.tolist(), keys, strict=True))
    # Rings of an unchanged period are converted in place; another period starts afresh.
    new.seasonal.carry_over(used, converted["seasonal_period"], a, b, converted)
    new.relations.rescale(used, a, b)
    new.last_carry = report
    return report


_IMMUTABLE = (str, int, float, bool, type(None), frozenset, np.generic)


def _clone(x: Any, memo: dict[int, Any]) -> Any:
    """A copy of a core's part deep enough to change without touching the original: arrays
    copied, containers rebuilt, objects copied attribute by attribute (`copy.deepcopy` took
    3 s for 100,000 series, most of it in its memo of the strings). An object met twice
    (in `memo`) is copied once."""
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, _IMMUTABLE):
        return x
    done = memo.get(id(x))
    if done is not None:
        return done
    if isinstance(x, list):
        return [v if isinstance(v, _IMMUTABLE) else _clone(v, memo) for v in x]
    if isinstance(x, tuple):  # e.g. the two device models
        return tuple(v if isinstance(v, _IMMUTABLE) else _clone(v, memo) for v in x)
    if isinstance(x, dict):
        return {k: v if isinstance(v, _IMMUTABLE) else _clone(v, memo) for k, v in x.items()}
    # typeshed's DataclassInstance does not declare the (runtime) __dataclass_params__.
    if (
        dataclasses.is_dataclass(x)
        and not isinstance(x, type)
        and type(x).__dataclass_params__.frozen  # type: ignore[attr-defined]
    ):
        return x  # settings
    obj = copy.copy(x)
    memo[id(x)] = obj
    for name, value in vars(obj).items():
        setattr(obj, name, _clone(value, memo))
    return obj
