"""What the detection core hands to the edges: scored readings and alert events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol

from detector.engine.readings import Reading

AlertState = Literal["firing", "resolved"]
NO_LABELS: Mapping[str, str] = MappingProxyType({})

EVICTED = "evicted"
"""`AlertEvent.reason` of a `resolved` event whose series was evicted as idle (no reading
for ``IOTAD_DETECTION__IDLE_EVICT_S``): its state is gone, nothing else would resolve it."""
ENDED = "ended"
"""`AlertEvent.reason` of a `resolved` event whose series its source ended (a Sparkplug
DEATH)."""


class Scored(NamedTuple):
    """A reading the model forecast: the band it was expected in and how far outside it was.

    Immutable; a NamedTuple because the core builds one per scored reading (a frozen
    dataclass cost several times as much to construct).
    """

    reading: Reading
    expected: float
    lower: float
    upper: float
    score: float
    is_anomaly: bool
    onset: bool = False
    """This reading opened an anomalous episode (its `firing` alert)."""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """The start (`firing`) or end (`resolved`) of an anomalous episode of one series.

    `id` is stable for the episode and state, so consumers can drop redelivered duplicates:
    the same episode's firing event always carries the same id.
    """

    id: str
    state: AlertState
    device: str
    metric: str
    ts: float
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    threshold: float
    signal: str = "forecast"
    """What fired the episode: ``forecast``, ``level``, ``relation`` (the device's other
    sensors disagree), ``seasonal``, ``repeat``, ``range``, ``flatline`` (see
    `detector.engine.scoring.SIGNALS`), or ``silence`` (the series stopped reporting)."""
    severity: str | None = None
    """The rules' severity for the series (`detector.engine.rules`); None: the sink's own."""
    labels: Mapping[str, str] = field(default_factory=lambda: NO_LABELS)
    """Extra labels of the series: from its topic (site, line, ...; `detector.worker.topics`, set
    by the worker) and from the rules (`detector.engine.rules`, which win)."""
    reason: str | None = None
    """Why a `resolved` event ended its episode when no reading did: ``evicted`` (`EVICTED`)
    or ``ended`` (`ENDED`); None when readings ended it (back to normal, or reporting again)
    and on `firing` events."""

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = dict(self.labels)
        return out


@dataclass(frozen=True, slots=True)
class Suppressed:
    """An alert a rule kept back: the `firing` event the series would have raised without
    its mute or maintenance rule, and which (``mute`` or ``maintenance``)."""

    event: AlertEvent
    reason: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A decoded reading the core would not take (out of order, too many series, ...)."""

    reading: Reading
    reason: str


@dataclass(frozen=True, slots=True)
class Eviction:
    """What one sweep for idle series did (`DetectionCore.evict_idle`): how many series it
    freed, and the `resolved` events of the alerts that were still open on them."""

    series: int
    events: list[AlertEvent]


@dataclass(slots=True)
class BatchResult:
    """Everything one `DetectionCore.process` call decided, in input order where it matters."""

    scored: list[Scored]
    events: list[AlertEvent]
    dropped: list[Dropped]
    warming: int = 0
    model_batch: int = 0
    inference_s: float = 0.0
    suppressed: list[Suppressed] = field(default_factory=list)
    """Alerts the rules kept back (counted by the worker, never silently gone)."""


class AlertSink(Protocol):
    """Where alert events go (MQTT topic, NATS subject, Alertmanager, a list in a test).

    `send` must not block the detection loop for long: a sink that talks to a slow service
    queues the event and delivers it from its own thread. `take_deliveries` hands back what
    the worker should see confirmed before it acknowledges the input that raised the events
    sent since the last call (`detector.worker.alerts.Delivery`); a sink that retries on its own
    (Alertmanager) returns none.
    """

    def send(self, event: AlertEvent) -> None: ...

    def take_deliveries(self) -> list[Any]: ...
