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


def _levels(topic_filter: str) -> list[str]:
    """The levels of a filter, a shared subscription's ``$share/<group>/`` prefix removed."""
    levels = topic_filter.split("/")
    if len(levels) > 2 and levels[0] == "$share":
        return levels[2:]
    return levels


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT filters `a` and `b` (``+``, ``#`` as in MQTT:
    ``x/#`` matches ``x`` too; a wildcard first level never matches a ``$`` topic)."""
    la, lb = _levels(a), _levels(b)
    if la and lb and (la[0][:1] == "$") != (lb[0][:1] == "$"):
        # One side is only ever a $-topic, the other (starting with a wildcard or a plain
        # level) only matches ordinary topics, unless it names that $-level itself.
        dollar, other = (la, lb) if la[0][:1] == "$" else (lb, la)
        if other[0] in ("+", "#") or other[0] != dollar[0]:
            return False
    for i in range(max(len(la), len(lb)) + 1):
        if i < len(la) and la[i] == "#":
            return True
        if i < len(lb) and lb[i] == "#":
            return True
        if i == len(la) or i == len(lb):
            return len(la) == len(lb)
        if la[i] != "+" and lb[i] != "+" and la[i] != lb[i]:
            return False
    return False  # not reached


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` (no wildcards) matches `topic_filter`."""
    return filters_overlap(topic_filter, topic)


def enclosing_filters(topic: str) -> list[str]:
    """The ``#`` filters that match `topic`, widest first: ``#``, ``a/#``, ``a/b/#``, ...
    (for a ``$`` topic, from ``$x/#`` on: ``#`` never matches it)."""
    levels = topic.split("/")
    first = 1 if topic.startswith("$") else 0
    return ["/".join([*levels[:n], "#"]) for n in range(first, len(levels) + 1)]


def valid_filter(topic_filter: str) -> bool:
    """Whether `topic_filter` is a well-formed MQTT filter (``#`` last and alone in its
    level, ``+`` alone in its level, no NUL, 1-65535 bytes)."""
    if not topic_filter or "\0" in topic_filter or len(topic_filter.encode()) > 65535:
        return False
    levels = topic_filter.split("/")
    if any("#" in level for level in levels[:-1]) or ("#" in levels[-1] and levels[-1] != "#"):
        return False
    return not any("+" in level and level != "+" for level in levels)
