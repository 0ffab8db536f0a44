"""Per-device rules: which series alert, at what threshold, when not, and with what labels.

A `RuleSet` is what the rules file says (`detector.worker.rules_file` reads and checks it). Each
`Rule` matches series by glob patterns (`fnmatch`, case-sensitive) over the device and the
metric, and may set:

- ``threshold``: the series' anomaly score threshold, an absolute score in (0, 1] that
  replaces ``IOTAD_DETECTION__THRESHOLD`` for it (the score is already calibrated per series
  by the model artifact; this is the cut-off applied to it);
- ``mute``: readings are scored and counted, but open no alert episode;
- ``maintenance``: windows (`detector.engine.rule_windows`) during which the same holds;
- ``severity`` and ``labels``: for Alertmanager (and the MQTT alert's JSON).

**Precedence.** Every rule that matches a series applies, in file order: a field a later
rule sets overrides what an earlier one set (``mute = false`` in a later rule un-mutes),
``labels`` merge key by key (later wins), and ``maintenance`` windows add up. A series no
rule matches keeps the worker's settings.

Pure: no I/O, no clock. The detection core asks `RuleSet.policy` once per series (when it is
allocated, and for every series when the rules change) and the windows per reading time.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from detector.engine.rule_windows import MaintenanceWindow

_CACHE_MAX = 200_000
"""Device and metric names whose matches are remembered; cleared past it (names churn)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rule]]`` of the file. None: the rule leaves that field to earlier rules."""

    device: str = "*"
    metric: str = "*"
    name: str = ""
    threshold: float | None = None
    mute: bool | None = None
    severity: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    maintenance: tuple[MaintenanceWindow, ...] = ()
    line: int = 0
    """Line of its ``[[rule]]`` header (0: not from a file)."""

    def title(self, index: int) -> str:
        """``rule 3 "line 2 weekly stop" (line 14)`` for messages; `index` counts from 1."""
        out = f"rule {index}"
        if self.name:
            out += f' "{self.name}"'
        if self.line:
            out += f" (line {self.line})"
        return out


@dataclass(frozen=True, slots=True)
class SeriesPolicy:
    """What the rules say about one series: the fields merged over the rules that match.

    `sources` names, per field, the index (from 0) of the rule that set it last; label keys
    appear as ``labels.<key>``.
    """

    matched: tuple[int, ...] = ()
    threshold: float | None = None
    mute: bool = False
    severity: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    windows: tuple[tuple[int, MaintenanceWindow], ...] = ()
    """``(rule index, window)`` of every matching rule's maintenance windows."""
    sources: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def plain(self) -> bool:
        """Whether it changes nothing (no rule, or rules that set nothing)."""
        return (
            self.threshold is None
            and not self.mute
            and self.severity is None
            and not self.labels
            and not self.windows
        )


NO_POLICY = SeriesPolicy()


def _matcher(pattern: str) -> Callable[[str], bool]:
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    return re.compile(fnmatch.translate(pattern)).match  # type: ignore[return-value]


class RuleSet:
    """The rules of one file, in file order, and the policy of any series under them.

    Example::

        rules = RuleSet([Rule(device="line2-*", mute=True)])
        rules.policy("line2-press", "temperature").mute   # True
    """

    def __init__(self, rules: list[Rule] | tuple[Rule, ...] = (), source: str = "") -> None:
        self.rules = tuple(rules)
        self.source = source
        """Where the rules came from (a path), for messages."""
        self._devices = [_matcher(r.device) for r in self.rules]
        self._metrics = [_matcher(r.metric) for r in self.rules]
        # Bit i set: rule i matches. Per name, not per series: 100,000 series are a few
        # thousand devices and a few dozen metrics, and a reload re-asks every series.
        self._device_bits: dict[str, int] = {}
        self._metric_bits: dict[str, int] = {}
        self._policies: dict[int, SeriesPolicy] = {0: NO_POLICY}

    def __len__(self) -> int:
        return len(self.rules)

    def policy(self, device: str, metric: str) -> SeriesPolicy:
        """The merged fields of the rules matching ``device/metric`` (see the module doc)."""
        if not self.rules:
            return NO_POLICY
        bits = self._bits(device, self._device_bits, self._devices) & self._bits(
            metric, self._metric_bits, self._metrics
        )
        found = self._policies.get(bits)
        if found is None:
            found = self._policies[bits] = self._merge(bits)
        return found

    @staticmethod
    def _bits(name: str, cache: dict[str, int], matchers: list[Callable[[str], bool]]) -> int:
        bits = cache.get(name)
        if bits is None:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            bits = 0
            for i, match in enumerate(matchers):
                if match(name):
                    bits |= 1 << i
            cache[name] = bits
        return bits

    def _merge(self, bits: int) -> SeriesPolicy:
        matched = tuple(i for i in range(len(self.rules)) if bits >> i & 1)
        threshold: float | None = None
        mute = False
        severity: str | None = None
        labels: dict[str, str] = {}
        windows: list[tuple[int, MaintenanceWindow]] = []
        sources: dict[str, int] = {}
        for i in matched:
            rule = self.rules[i]
            if rule.threshold is not None:
                threshold, sources["threshold"] = rule.threshold, i
            if rule.mute is not None:
                mute, sources["mute"] = rule.mute, i
            if rule.severity is not None:
                severity, sources["severity"] = rule.severity, i
            for key, value in rule.labels.items():
                labels[key] = value
                sources[f"labels.{key}"] = i
            windows.extend((i, w) for w in rule.maintenance)
        return SeriesPolicy(
            matched=matched,
            threshold=threshold,
            mute=mute,
            severity=severity,
            labels=MappingProxyType(labels),
            windows=tuple(windows),
            sources=MappingProxyType(sources),
        )
