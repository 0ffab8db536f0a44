"""One contract for every owner of per-series (per-slot) state in the detection core.

The core keeps each series in a *slot*: one row of many numpy arrays, owned by several
parts (the windows, the scales, the error statistics, the scorer's signals, the seasonal
forecast, the episodes, ...). Each part implements `SlotState`, and the core only iterates
over its parts to grow, reset, snapshot, restore and measure them, as PyTorch's
``Module.state_dict()`` leaves each module to serialise its own state.

A snapshot is a dict of arrays with one row per series, by *checkpoint name*: names are a
file format, so they outlive the Python attributes that hold the arrays. Each part also
writes its version (``version_<part>``, one entry per series); a snapshot without one
reads as version 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from detector.engine.slot_arrays import grown

VERSION_PREFIX = "version_"
"""Snapshot entries naming a part's version: ``version_<part name>``, one entry per series
(so a NATS partition split or merge carries it like any other row)."""
UNVERSIONED = 1
"""The version of a part in a snapshot written before parts had versions."""


@runtime_checkable
class SlotState(Protocol):
    """Per-slot state of one part of the core."""

    @property
    def name(self) -> str:
        """The part's name in snapshots (``version_<name>``) and error messages."""

    @property
    def version(self) -> int:
        """Bumped when the meaning or layout of the part's snapshot arrays changes."""

    @property
    def required(self) -> tuple[str, ...]:
        """Snapshot names a restore cannot do without (the rest are optional)."""

    def grow(self, capacity: int) -> None:
        """Hold at least `capacity` slots; new ones at their start value."""

    def reset(self, slot: int) -> None:
        """Put `slot` back to its start value (it holds no series, or a fresh one)."""

    def snapshot(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The state of `slots`, one row per slot, by snapshot name (copies)."""

    def restore(self, slots: np.ndarray, state: Mapping[str, np.ndarray]) -> None:
        """Load rows ``: len(slots)`` of `state` into `slots` (reset and seeded before);
        an optional name absent from `state` keeps what the slot holds."""

    def nbytes(self) -> int:
        """Memory the part's state takes, in bytes."""


def version_key(part: str) -> str:
    return f"{VERSION_PREFIX}{part}"


def versions(parts: Iterable[SlotState], series: int) -> dict[str, np.ndarray]:
    """The ``version_<part>`` entries of a snapshot of `parts` with `series` rows.

    One entry per series, like every other array of a snapshot: the checkpoint code that
    splits and merges snapshots by rows (NATS partitions) takes them as they are, and a
    worker older than the versions ignores them rather than refusing the checkpoint.
    """
    return {version_key(p.name): np.full(series, p.version, dtype=np.int16) for p in parts}


def check_versions(parts: Iterable[SlotState], state: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError naming the first part whose snapshot version this code does not
    read (a part without an entry is version 1)."""
    for part in parts:
        entry = state.get(version_key(part.name))
        found = {UNVERSIONED} if entry is None else set(np.unique(entry).tolist())
        if found - {part.version}:
            held = ", ".join(str(v) for v in sorted(found))
            raise ValueError(
                f"checkpoint part {part.name!r} is version {held}, "
                f"this build reads version {part.version}"
            )


def missing_names(parts: Iterable[SlotState], state: Mapping[str, np.ndarray]) -> list[str]:
    """The required snapshot names of `parts` that `state` lacks."""
    return [name for part in parts for name in part.required if name not in state]


@dataclass(frozen=True, slots=True)
class Column:
    """One per-slot array of a part: its snapshot name, the attribute path that holds it
    (dotted for an array of a member object), and the value of an empty slot."""

    name: str
    path: str
    fill: float
    optional: bool = False
    saved: bool = True
    """False: derived at allocation (from the artifact), never in a snapshot."""


def _owner(root: object, path: str) -> tuple[Any, str]:
    *hops, attr = path.split(".")
    obj: Any = root
    for hop in hops:
        obj = getattr(obj, hop)
    return obj, attr


class ColumnState:
    """A `SlotState` made of plain per-slot arrays, described by `Column`s.

    Subclasses set `name`, `version` and `columns`; the arrays are attributes of the
    subclass (or of its members, by dotted path) so the code that computes with them reads
    them as usual.
    """

    name: str
    version: int = 1
    columns: tuple[Column, ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.saved and not c.optional)

    def _holders(self) -> list[tuple[Any, str, Column]]:
        """Each column's holding object and attribute (resolved once: the objects stay, only
        their arrays are replaced as they grow)."""
        holders: list[tuple[Any, str, Column]] | None = self.__dict__.get("_holder_cache")
        if holders is None:
            holders = [(*_owner(self, c.path), c) for c in self.columns]
            self.__dict__["_holder_cache"] = holders
        return holders

    def grow(self, capacity: int) -> None:
        for obj, attr, column in self._holders():
            setattr(obj, attr, grown(getattr(obj, attr), capacity, column.fill))

    def reset(self, slot: int) -> None:
        for obj, attr, column in self._holders():
            getattr(obj, attr)[slot] = column.fill

    def snapshot(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {c.name: getattr(o, a)[slots] for o, a, c in self._holders() if c.saved}

    def restore(self, slots: np.ndarray, state: Mapping[str, np.ndarray]) -> None:
        for obj, attr, column in self._holders():
            if column.saved and column.name in state:
                getattr(obj, attr)[slots] = state[column.name][: len(slots)]

    def nbytes(self) -> int:
        return sum(getattr(obj, attr).nbytes for obj, attr, _ in self._holders())


class ColumnGroup(ColumnState):
    """A named group of another object's per-slot arrays (a part of a larger owner, such
    as one signal of the scorer); the paths are relative to `owner`."""

    def __init__(self, name: str, owner: object, columns: tuple[Column, ...], version: int = 1):
        self.name = name
        self.version = version
        self.owner = owner
        self.columns = tuple(
            Column(c.name, f"owner.{c.path}", c.fill, c.optional, c.saved) for c in columns
        )
