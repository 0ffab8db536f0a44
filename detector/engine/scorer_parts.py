"""The scorer's per-slot state as `detector.engine.slot_state` parts, one per signal, by the
checkpoint names of its arrays (`detector.engine.scoring.AnomalyScorer` holds the arrays)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from detector.engine.slot_state import Column, ColumnGroup

if TYPE_CHECKING:
    from detector.engine.scoring import AnomalyScorer

NO_RUN_YET = np.iinfo(np.int32).max
"""`AnomalyScorer.longest_repeat_count` of a series that has not changed value yet."""


def _ring_columns(prefix: str, path: str, optional: bool = False) -> tuple[Column, ...]:
    """A `RecentMean`'s arrays: its ring, running total and count."""
    return tuple(
        Column(f"{prefix}_{k}", f"{path}.{k}", 0.0, optional) for k in ("ring", "total", "count")
    )


def _run_columns(prefix: str, path: str, optional: bool = False) -> tuple[Column, ...]:
    """A `LongRun`'s arrays: its mean and variance."""
    return (
        Column(f"{prefix}_mean", f"{path}.mean", 0.0, optional),
        Column(f"{prefix}_var", f"{path}.var", 1.0, optional),
    )


def scorer_parts(scorer: AnomalyScorer) -> tuple[ColumnGroup, ...]:
    """The scorer's per-slot state as parts, by checkpoint name. Names added after the
    first checkpoint format are optional: an older checkpoint restores without them and
    those signals start afresh."""
    return (
        ColumnGroup(
            "forecast_error",
            scorer,
            (
                *_ring_columns("recent_error", "recent_error"),
                *_run_columns("error_run", "error_run"),
            ),
        ),
        ColumnGroup(
            "level",
            scorer,
            (
                *_ring_columns("recent_value", "recent_value"),
                *_run_columns("value_run", "value_run"),
            ),
        ),
        ColumnGroup(
            "range",
            scorer,
            (
                Column("low", "low", np.inf),
                Column("high", "high", -np.inf),
                Column("trusted_range", "trusted_range", False),
            ),
        ),
        ColumnGroup(
            "learning",
            scorer,
            (Column("seen", "seen_count", 0), Column("trusted_stats", "trusted_stats", False)),
        ),
        ColumnGroup(
            "repeats",
            scorer,
            (
                Column("flat_run", "repeat_count", 0, optional=True),
                Column("flat_longest_run", "longest_repeat_count", NO_RUN_YET, optional=True),
                Column("repeat_rate", "repeat_rate", 0.0, optional=True),
            ),
        ),
        ColumnGroup(
            "relation",
            scorer,
            (
                *_ring_columns("relation", "recent_relation", optional=True),
                *_run_columns("relation_run", "relation_run", optional=True),
                Column("relation_seen", "relation_seen_count", 0, optional=True),
            ),
        ),
        ColumnGroup("sustained", scorer, (Column("sustained", "sustained", 0.0, optional=True),)),
    )
