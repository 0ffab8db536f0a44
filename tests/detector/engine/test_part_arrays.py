"""Nothing outside a part of the detection core touches its arrays.

Each part (`detector.engine.slot_state.SlotState`) keeps its per-slot arrays to itself: the
other modules of the engine go through its methods, so that a part can change how it stores
a series without hunting for readers elsewhere. This scans the engine's source for an
attribute access ``<part>.<array>`` (``core.scales.offset``, ``store.count``, ...) outside the
part's own module, by the names the core gives its parts. It is a convention check: an
alias under another name (``s = core.scales``) goes unseen.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from tests.detector.core_fixtures import LastValueForecaster, make_artifact

ENGINE = Path(__file__).parents[3] / "detector" / "engine"

PART_ATTRIBUTES = (
    "store",
    "scales",
    "errors",
    "scorer",
    "seasonal",
    "episodes",
    "held",
    "silence",
    "rules",
    "relations",
)
"""The core's attributes that hold its parts (and the names the engine's modules give them)."""

ALLOWED = {
    # The seasonal part holds the scorer's seasonal error statistics (the scorer scores
    # them): the core hands the one object to both when it builds them.
    ("core.py", "scorer", "seasonal_error_stats"),
}

Access = tuple[str, str, str]
"""(module file, part attribute, array attribute)"""


def _is_storage(value: object, capacity: int) -> bool:
    """A per-slot array (one row per slot), or an object of the engine holding state (the
    rings of the seasonal forecast, the device models, the scorer's running statistics).
    Settings (frozen dataclasses) and arrays of the last call's results (sized by the
    call, not by the slots) are not storage."""
    if isinstance(value, np.ndarray):
        return bool(value.ndim) and value.shape[0] == capacity
    if isinstance(value, tuple):
        return any(_is_storage(v, capacity) for v in value)
    module = type(value).__module__
    if not module.startswith("detector.engine.") or not hasattr(value, "__dict__"):
        return False
    return not (dataclasses.is_dataclass(value) and type(value).__dataclass_params__.frozen)  # type: ignore[attr-defined]


def _owned() -> dict[str, tuple[str, frozenset[str]]]:
    """Part attribute -> (its module's file, its storage attributes), from a live core."""
    core = DetectionCore(
        make_artifact(), LastValueForecaster(), DetectionConfig(relate_devices=True)
    )
    capacity = core.store.capacity
    owned = {}
    for name in PART_ATTRIBUTES:
        part = getattr(core, name)
        storage = {k for k, v in vars(part).items() if k != "parts" and _is_storage(v, capacity)}
        module_file = type(part).__module__.rsplit(".", 1)[1] + ".py"
        owned[name] = (module_file, frozenset(storage))
    return owned


def _accesses(
    file_name: str, source: str, owned: dict[str, tuple[str, frozenset[str]]]
) -> list[Access]:
    """Every ``<part>.<storage>`` access in `source` outside the part's own module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        holder = node.value
        if isinstance(holder, ast.Attribute):
            part = holder.attr
        elif isinstance(holder, ast.Name):
            part = holder.id
        else:
            continue
        owner = owned.get(part)
        if owner and node.attr in owner[1] and file_name != owner[0]:
            found.append((file_name, part, node.attr))
    return found


def test_the_scan_sees_an_array_read_outside_its_part() -> None:
    owned = _owned()
    source = "def f(core, slots):\n    return core.scales.offset[slots], episodes.active\n"
    assert sorted(_accesses("scoring_rounds.py", source, owned)) == [
        ("scoring_rounds.py", "episodes", "active"),
        ("scoring_rounds.py", "scales", "offset"),
    ]
    assert _accesses("series_scales.py", "self.scales.offset", owned) == []


def test_no_engine_module_touches_another_parts_arrays() -> None:
    owned = _owned()
    assert "offset" in owned["scales"][1] and "rings" in owned["seasonal"][1]
    found = [
        access
        for path in sorted(ENGINE.glob("*.py"))
        for access in _accesses(path.name, path.read_text(), owned)
        if access not in ALLOWED
    ]
    assert found == []
