"""Topic templates: which part of an MQTT topic names the device, the metric and any labels."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

DEFAULT_PATTERNS = ("sensors/{device}/{metric}", "sensors/{device}")

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
"""A label's name: a Prometheus and Alertmanager label name (without the reserved ``__``
start), at most 64 characters."""
RESERVED_LABELS = frozenset({"alertname", "severity"})
"""Label names the worker sets itself on alerts (``device`` and ``metric`` are the series)."""
Labels = Mapping[str, str]
"""The extra labels of a series, from its topic: site, line, cell, ..."""


class TopicPattern:
    """A topic template such as ``sensors/{device}/{metric}`` or
    ``plant/{site}/{line}/{device}/{metric}``.

    Segments are literals, ``+`` (any one segment, ignored), ``{device}`` (required),
    ``{metric}`` (else the payload names the metric), or ``{name}`` for a label: the
    segment's value travels with the series into its alerts (MQTT and Alertmanager) and
    dead letters, never into Prometheus metrics. A constructor error is one line naming the
    pattern.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.segments = tuple(pattern.split("/"))
        self.labels: tuple[str, ...] = ()
        labels: list[str] = []
        for seg in self.segments:
            if seg in ("{device}", "{metric}", "+"):
                continue
            if seg.startswith("{") and seg.endswith("}") and seg.count("{") == 1:
                name = seg[1:-1]
                if not LABEL_NAME.match(name) or name.startswith("__"):
                    raise ValueError(
                        f"topic pattern {pattern!r}: label {seg!r} must be a label name "
                        "(a letter or _, then letters, digits, _; not starting with __)"
                    )
                if name in RESERVED_LABELS:
                    raise ValueError(f"topic pattern {pattern!r}: label {seg!r} is reserved")
                if name in labels:
                    raise ValueError(f"topic pattern {pattern!r} names {seg} twice")
                labels.append(name)
                continue
            if not seg or any(c in seg for c in "+#{}"):
                raise ValueError(
                    f"topic pattern {pattern!r}: segment {seg!r} must be a literal, '+', "
                    "'{device}', '{metric}' or a '{label}'"
                )
        if self.segments.count("{device}") > 1 or self.segments.count("{metric}") > 1:
            raise ValueError(f"topic pattern {pattern!r} names {{device}} or {{metric}} twice")
        if "{device}" not in self.segments:
            raise ValueError(f"topic pattern {pattern!r} has no {{device}}")
        self.labels = tuple(labels)

    def match(self, parts: Sequence[str]) -> tuple[str | None, str | None, dict[str, str]] | None:
        """``(device, metric, labels)`` (metric None where the pattern has none, labels
        empty where it names none), or None when the topic does not match."""
        if len(parts) != len(self.segments):
            return None
        device = metric = None
        labels: dict[str, str] = {}
        for seg, part in zip(self.segments, parts, strict=True):
            if seg == "{device}":
                device = part
            elif seg == "{metric}":
                metric = part
            elif seg[:1] == "{":
                labels[seg[1:-1]] = part
            elif seg != "+" and seg != part:
                return None
        return device, metric, labels


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
