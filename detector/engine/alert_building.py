"""The alert events the core sends: an episode's start or end, a silence, and the events
that close a series' open alerts when it leaves the core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

from detector.engine.decision import EpisodeTracker, event_id
from detector.engine.events import NO_LABELS, AlertEvent, AlertState, Scored
from detector.engine.rule_policy import SeriesRules
from detector.engine.scoring import SIGNALS


class SeriesRuling(NamedTuple):
    """What the rules give every alert of one series."""

    threshold: float
    severity: str | None
    labels: Mapping[str, str]


def ruling(rules: SeriesRules, slot: int | None, default_threshold: float) -> SeriesRuling:
    """The rules' threshold, severity and labels of the series at `slot` (None: a series
    with no slot, which the defaults apply to)."""
    if slot is None:
        return SeriesRuling(default_threshold, None, NO_LABELS)
    return SeriesRuling(rules.threshold_of(slot), rules.severity(slot), rules.labels(slot))


def episode_event(
    scored: Scored, state: AlertState, onset: float, signal: str, rule: SeriesRuling
) -> AlertEvent:
    """The `firing` or `resolved` event of the episode that began at `onset`, raised by
    reading `scored`."""
    r = scored.reading
    base = event_id(r.key, onset)
    return AlertEvent(
        id=base if state == "firing" else f"{base}-resolved",
        state=state,
        device=r.device,
        metric=r.metric,
        ts=r.ts,
        value=r.value,
        expected=scored.expected,
        lower=scored.lower,
        upper=scored.upper,
        score=scored.score,
        threshold=rule.threshold,
        signal=signal,
        severity=rule.severity,
        labels=rule.labels,
    )


def silence_event(
    state: AlertState,
    key: str,
    ts: float,
    value: float,
    onset: float,
    rule: SeriesRuling,
) -> AlertEvent:
    """The `firing` or `resolved` event of series `key`'s silence since `onset` (its last
    reading's time), stamped `ts`; `value` is the last value it reported."""
    device, _, metric = key.partition("/")
    base = event_id(f"{key}|silence", onset)
    return AlertEvent(
        id=base if state == "firing" else f"{base}-resolved",
        state=state,
        device=device,
        metric=metric,
        ts=ts,
        value=value,
        expected=value,
        lower=value,
        upper=value,
        score=1.0,
        threshold=rule.threshold,
        signal="silence",
        severity=rule.severity,
        labels=rule.labels,
    )


def closing_events(
    key: str,
    at: float,
    reason: str,
    value: float,
    silence_onset: float | None,
    episodes: EpisodeTracker,
    slot: int,
    rule: SeriesRuling,
) -> list[AlertEvent]:
    """Resolved events (stamped `at`, never before the alert's onset, with `reason`) of the
    open episode and silence of a series that leaves the core. `silence_onset` is None
    unless an unsuppressed silence of the series is open (a silence whose firing a rule
    kept back ends unseen, as it would with a reading)."""
    events: list[AlertEvent] = []
    if silence_onset is not None:
        resolved = silence_event(
            "resolved", key, max(at, silence_onset), value, silence_onset, rule
        )
        events.append(replace(resolved, reason=reason))
    onset = episodes.open_onset(slot)
    if onset is not None:
        device, _, metric = key.partition("/")
        events.append(
            AlertEvent(
                id=f"{event_id(key, onset)}-resolved",
                state="resolved",
                device=device,
                metric=metric,
                ts=max(at, onset),
                value=value,
                expected=value,
                lower=value,
                upper=value,
                score=0.0,
                threshold=rule.threshold,
                signal=SIGNALS[episodes.signal_of(slot)],
                severity=rule.severity,
                labels=rule.labels,
                reason=reason,
            )
        )
    return events
