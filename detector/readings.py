"""The values that flow through the detector: readings in, rejections aside."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Device and metric names end up in topic names, metric labels and file names, so they are
# restricted to a safe alphabet before anything else sees them.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def valid_name(name: str) -> bool:
    """True when `name` is safe as a device or metric name (1-64 of [A-Za-z0-9_.-])."""
    return bool(NAME_RE.match(name)) and name not in {".", ".."}


def series_key(device: str, metric: str) -> str:
    """The artifact's and checkpoints' key for a series: ``device/metric``."""
    return f"{device}/{metric}"


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor value. `ts` is epoch seconds (float)."""

    device: str
    metric: str
    ts: float
    value: float

    @property
    def key(self) -> str:
        return series_key(self.device, self.metric)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Input that was not accepted, and why. `reason` is a short snake_case label."""

    reason: str
    detail: str
    topic: str = ""
    payload: bytes = b""
