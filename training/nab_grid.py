"""The settings that earlier rounds chose by their NAB score, as candidates for cross-validation.

Each `Knob` is one such constant: its current default, its *simple* value (what it was
before NAB tuned it, or the signal switched off where it had no earlier value) and the values
tried. Three candidate lists are built from them:

* ``one_at_a_time(knob)``: the defaults with that one knob varied (default value first);
* ``joint()``: a small factorial over the knobs that moved NAB most, signals off included;
* ``simple()``: every knob at its simple value.

A variant is named by what differs from the defaults, e.g. ``range_tolerance=0,seasonal=off``.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from detector.engine.detection_config import DetectionConfig
from detector.engine.seasonality import MIN_AUTOCORRELATION
from training.nab_multi import Variant

SEASONAL = "seasonal"
"""The knob that is not a `DetectionConfig` field: the autocorrelation a series' period needs
(None: no seasonal signal)."""
OFF = "off"


@dataclass(frozen=True, slots=True)
class Knob:
    """A constant tuned on NAB: its default, its simple value and the values tried."""

    name: str
    default: Any
    simple: Any
    values: tuple[Any, ...]
    note: str


KNOBS: tuple[Knob, ...] = (
    Knob("range_tolerance", 0.004, 0.0, (0.0, 0.002, 0.004, 0.01, 0.02, OFF),
         "range signal: margin beyond the range seen (off: use_range=False)"),
    Knob("level_halflife", 2500, 1000, (800, 1000, 2000, 2500, 5000, OFF),
         "level signal's memory (was 1000, as the errors'; off: use_level=False)"),
    Knob("likelihood_halflife", 800, 1000, (600, 800, 1000, 1500),
         "forecast-error likelihood's memory (was 1000)"),
    Knob("flatline_min", 100, 0, (0, 50, 100, 200), "flatline signal (0: off, as before)"),
    Knob("quiet_period", 100, 100, (0, 50, 100, 150),
         "readings before an episode may resolve (simple: kept, one alert per level shift)"),
    Knob("short_window", 10, 10, (5, 10, 20), "readings in the recent means"),
    Knob("threshold", 0.5, 0.5, (0.4, 0.45, 0.5, 0.55, 0.6), "the core's alert threshold"),
    Knob(SEASONAL, MIN_AUTOCORRELATION, 0.5, (None, 0.5, 0.7, MIN_AUTOCORRELATION, 0.9),
         "autocorrelation a seasonal period needs (was 0.5; None: signal off)"),
)  # fmt: skip
KNOB = {k.name: k for k in KNOBS}


def _fields(settings: dict[str, Any]) -> dict[str, Any]:
    """DetectionConfig fields of knob settings (``off`` switches the signal off)."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if name == SEASONAL:
            continue
        if name == "range_tolerance" and value == OFF:
            out["use_range"] = False
        elif name == "level_halflife" and value == OFF:
            out["use_level"] = False
        else:
            out[name] = value
    return out


def variant(**settings: Any) -> Variant:
    """The defaults with `settings` (knob name -> value) changed, named by the changes."""
    unknown = sorted(set(settings) - set(KNOB))
    if unknown:
        raise ValueError(f"not a tuned knob: {', '.join(unknown)}")
    changed = {k: v for k, v in settings.items() if v != KNOB[k].default}
    label = ",".join(f"{k}={OFF if v is None else v}" for k, v in sorted(changed.items()))
    detection = dataclasses.replace(DetectionConfig(), **_fields(changed))
    seasonal = changed.get(SEASONAL, MIN_AUTOCORRELATION)
    return Variant(label or "default", detection, seasonal)


DEFAULT = variant()


def one_at_a_time(knob: str) -> list[Variant]:
    """The defaults with one knob varied over its values, the default value first."""
    k = KNOB[knob]
    values = [k.default, *(v for v in k.values if v != k.default)]
    return [variant(**{knob: v}) for v in values]


def simple() -> Variant:
    """Every knob at its simple value."""
    return variant(**{k.name: k.simple for k in KNOBS})


JOINT_AXES: dict[str, tuple[Any, ...]] = {
    "range_tolerance": (0.004, 0.0, OFF),
    "level_halflife": (2500, 1000, OFF),
    "likelihood_halflife": (800, 1000),
    "flatline_min": (100, 0),
    SEASONAL: (MIN_AUTOCORRELATION, 0.5, None),
}
"""The joint grid: defaults first on every axis, so the first variant is the default."""


def joint(axes: dict[str, tuple[Any, ...]] | None = None) -> list[Variant]:
    """Every combination of the axes' values (the defaults' combination first)."""
    axes = JOINT_AXES if axes is None else axes
    names = list(axes)
    return [
        variant(**dict(zip(names, combo, strict=True)))
        for combo in itertools.product(*(axes[n] for n in names))
    ]


def unique(variants: list[Variant]) -> list[Variant]:
    """Variants without repeats (same settings), first occurrence kept."""
    seen: dict[tuple[DetectionConfig, float | None], Variant] = {}
    for v in variants:
        seen.setdefault((v.detection, v.min_autocorrelation), v)
    return list(seen.values())


def full_grid() -> list[Variant]:
    """Everything the CV report looks at: the joint grid, each knob alone, the simple set."""
    alone = [v for k in KNOBS for v in one_at_a_time(k.name)]
    return unique([DEFAULT, *joint(), *alone, simple()])


def small_grid() -> list[Variant]:
    """A handful of variants (tests, quick looks): defaults, signals off, the simple set."""
    return unique(
        [
            DEFAULT,
            variant(range_tolerance=OFF),
            variant(flatline_min=0),
            variant(**{SEASONAL: None}),
            simple(),
        ]
    )
