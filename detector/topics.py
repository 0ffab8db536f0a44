"""Topic templates: which part of an MQTT topic names the device and which the metric."""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_PATTERNS = ("sensors/{device}/{metric}", "sensors/{device}")


class TopicPattern:
    """A topic template such as ``sensors/{device}/{metric}``.

    Segments are literals, ``+`` (any one segment, ignored), ``{device}`` or ``{metric}``.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.segments = tuple(pattern.split("/"))
        for seg in self.segments:
            if seg in ("{device}", "{metric}", "+"):
                continue
            if not seg or any(c in seg for c in "+#{}"):
                raise ValueError(
                    f"topic pattern {pattern!r}: segment {seg!r} must be a literal, '+', "
                    "'{device}' or '{metric}'"
                )
        if self.segments.count("{device}") > 1 or self.segments.count("{metric}") > 1:
            raise ValueError(f"topic pattern {pattern!r} names {{device}} or {{metric}} twice")

    def match(self, parts: Sequence[str]) -> tuple[str | None, str | None] | None:
        """``(device, metric)`` (None where the pattern has no such part), or None."""
        if len(parts) != len(self.segments):
            return None
        device = metric = None
        for seg, part in zip(self.segments, parts, strict=True):
            if seg == "{device}":
                device = part
            elif seg == "{metric}":
                metric = part
            elif seg != "+" and seg != part:
                return None
        return device, metric
