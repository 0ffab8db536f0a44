"""The dead-letter topic: every rejected or dropped reading, with why, for later inspection.

One JSON message per rejected reading on ``iotad/deadletter`` (QoS 1)::

    {"reason": "bad_ts", "detail": "ts 'yesterday' is not ISO 8601",
     "topic": "sensors/press-4/temperature", "payload": "{\\"ts\\": \\"yesterday\\", ...}",
     "payload_encoding": "text", "size": 34, "truncated": false,
     "worker": "iotad-a", "ts": 1718000000.1, "labels": {}}

``labels`` are those of the topic's template (`detector.worker.topics`), ``{}`` when it names none.
The payload is cut to a configurable size; it is text (UTF-8, undecodable bytes replaced)
when the original was valid UTF-8, base64 otherwise.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping

import msgspec

from detector.engine.events import Dropped
from detector.engine.readings import Rejection
from detector.worker.alerts import Delivery, Publisher


class DeadLetter(msgspec.Struct, frozen=True):
    """The JSON of one dead letter."""

    reason: str
    detail: str
    topic: str
    payload: str
    payload_encoding: str
    size: int
    truncated: bool
    worker: str
    ts: float
    labels: dict[str, str] = {}
    """The labels of the message's topic (site, line, ...; `detector.worker.topics`), if any."""


_encode = msgspec.json.Encoder().encode


def payload_text(payload: bytes, limit: int) -> tuple[str, str, bool]:
    """``(text, encoding, truncated)`` for at most `limit` bytes of `payload`."""
    cut = payload[:limit]
    truncated = len(payload) > limit
    try:
        return cut.decode("utf-8"), "text", truncated
    except UnicodeDecodeError:
        pass
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(cut).decode("ascii"), "base64", truncated
    # Valid UTF-8 cut in the middle of a character: replace the broken tail.
    return cut.decode("utf-8", errors="replace"), "text", truncated


class DeadLetterPublisher:
    """Publishes rejections and core drops to the dead-letter topic.

    Args:
        publisher: the MQTT connection (or a list in a test).
        topic: the dead-letter topic.
        worker_id: carried in every message, so a fleet's dead letters can be told apart.
        max_payload_bytes: how much of the original payload to include.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        topic: str = "iotad/deadletter",
        worker_id: str = "",
        max_payload_bytes: int = 1024,
        qos: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.worker_id = worker_id
        self.max_payload_bytes = max_payload_bytes
        self.qos = qos
        self._clock = clock
        self.failed = 0
        self._pending: list[Delivery] = []

    def encode(
        self,
        reason: str,
        detail: str,
        topic: str,
        payload: bytes,
        labels: Mapping[str, str] | None = None,
    ) -> bytes:
        text, encoding, truncated = payload_text(payload, self.max_payload_bytes)
        return _encode(
            DeadLetter(
                reason=reason,
                detail=detail,
                topic=topic,
                payload=text,
                payload_encoding=encoding,
                size=len(payload),
                truncated=truncated,
                worker=self.worker_id,
                ts=self._clock(),
                labels=dict(labels or {}),
            )
        )

    def send(
        self,
        reason: str,
        detail: str,
        topic: str,
        payload: bytes,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Publish one dead letter; False when the client refused it (counted in `failed`)."""
        body = self.encode(reason, detail, topic, payload, labels)
        delivery = self.publisher.publish(self.topic, body, self.qos)
        if delivery is None:
            self.failed += 1
            return False
        if self.qos:
            self._pending.append(delivery)
        return True

    def take_deliveries(self) -> list[Delivery]:
        """The publishes of the dead letters sent since the last call: the worker acks the
        messages they came from once these are done, as for alerts."""
        pending, self._pending = self._pending, []
        return pending

    def send_rejection(self, rejection: Rejection) -> bool:
        return self.send(rejection.reason, rejection.detail, rejection.topic, rejection.payload)

    def send_dropped(
        self, dropped: Dropped, topic: str = "", labels: Mapping[str, str] | None = None
    ) -> bool:
        """A reading the core dropped; its payload is the reading as the core saw it."""
        r = dropped.reading
        body = _encode({"device": r.device, "metric": r.metric, "ts": r.ts, "value": r.value})
        detail = f"{r.device}/{r.metric} at ts {r.ts!r} dropped by the detection core"
        return self.send(dropped.reason, detail, topic, body, labels)
