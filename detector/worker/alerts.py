"""Alert events and scored readings out to MQTT.

- `MqttAlertSink` (an `AlertSink`): QoS 1 on ``alerts/{device}/{metric}``, JSON with a stable
  id per episode and state, so consumers can drop redelivered duplicates.
- `ScoreStream`: opt-in, every scored reading on ``scores/{device}/{metric}`` at QoS 0.

Both publish through a `Publisher` (the MQTT connection, or a list in a test).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

from detector.engine.events import AlertEvent, Scored


class Delivery(Protocol):
    """A queued publish. `done` is True once the broker confirmed it (QoS 0: once sent) or
    once it can no longer be confirmed (refused, or the connection it was sent on is gone).
    `lost` is True when it was given up and the input that raised it must not be acked yet
    (NATS: the output stream never acknowledged it); the worker then calls `send_again` until
    it is confirmed (`detector.worker.resends`). MQTT's are never lost: the worker acks what raised
    them once they are done, confirmed or not."""

    def done(self) -> bool: ...

    def lost(self) -> bool: ...

    def send_again(self) -> None:
        """Publish a lost delivery again as the same message (NATS: the same
        ``Nats-Msg-Id``, which the output stream stores once); it is pending again. It stays
        lost when it cannot be sent now."""
        ...


class Publisher(Protocol):
    """Something that publishes to topics; None means the publish was refused."""

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> Delivery | None: ...


class AlertMessage(msgspec.Struct, frozen=True):
    """The JSON of one alert event on the alerts topic."""

    id: str
    state: str
    device: str
    metric: str
    ts: float
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    threshold: float
    model: str
    worker: str
    signal: str = "forecast"
    """What fired the episode (`detector.engine.events.AlertEvent.signal`); absent from alerts of
    workers before it, read as ``forecast``."""
    severity: str | None = None
    """The series' severity from the rules file (`detector.engine.rules`); null: none set."""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    """The series' extra labels: from its topic (site, line, ...) and the rules file (which
    win); empty when it has none."""
    reason: str | None = None
    """Why a ``resolved`` alert ended when no reading ended it: ``evicted`` (the series sent
    nothing for ``IOTAD_DETECTION__IDLE_EVICT_S`` and its state was dropped) or ``ended`` (a
    Sparkplug DEATH); null otherwise (`detector.engine.events.AlertEvent.reason`)."""


class ScoreMessage(msgspec.Struct, frozen=True):
    """The JSON of one scored reading on the scores topic."""

    ts: float
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    anomaly: bool


_encode = msgspec.json.Encoder().encode


class MqttAlertSink:
    """Publishes alert events at QoS 1 on ``<prefix>/{device}/{metric}``.

    `take_deliveries` hands the worker the publishes of the events sent since the last call;
    the worker acknowledges the input that caused them only once they are `done`, so an
    alert is never lost to a crash between the ack and the publish. Nothing here blocks:
    waiting for the broker on the detection thread could stall the network thread that
    has to read the broker's answer.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        prefix: str = "alerts",
        model_version: str = "",
        worker_id: str = "",
        qos: int = 1,
    ) -> None:
        self.publisher = publisher
        self.prefix = prefix
        self.model_version = model_version
        self.worker_id = worker_id
        self.qos = qos
        self.failed = 0
        self._pending: list[Delivery] = []

    def topic(self, event: AlertEvent) -> str:
        return f"{self.prefix}/{event.device}/{event.metric}"

    def encode(self, event: AlertEvent) -> bytes:
        return _encode(
            AlertMessage(**event.to_dict(), model=self.model_version, worker=self.worker_id)
        )

    def send(self, event: AlertEvent) -> None:
        delivery = self.publisher.publish(self.topic(event), self.encode(event), qos=self.qos)
        if delivery is None:
            self.failed += 1
        else:
            self._pending.append(delivery)

    def take_deliveries(self) -> list[Delivery]:
        """The publishes of the events sent since the last call."""
        pending, self._pending = self._pending, []
        return pending


class ScoreStream:
    """Publishes every scored reading on ``<prefix>/{device}/{metric}`` at QoS 0."""

    def __init__(self, publisher: Publisher, prefix: str = "scores") -> None:
        self.publisher = publisher
        self.prefix = prefix
        self.failed = 0

    def send_many(self, scored: Iterable[Scored]) -> int:
        """Publish each scored reading; returns how many the client refused."""
        failed = 0
        publish = self.publisher.publish
        for s in scored:
            r = s.reading
            body = _encode(
                ScoreMessage(r.ts, r.value, s.expected, s.lower, s.upper, s.score, s.is_anomaly)
            )
            if publish(f"{self.prefix}/{r.device}/{r.metric}", body, 0) is None:
                failed += 1
        self.failed += failed
        return failed
