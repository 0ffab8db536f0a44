"""The hand-over from a source's network thread to the detection thread.

`Inbound` is one decoded message with the source's opaque token to acknowledge it later;
`IngestQueue` is the bounded queue between the two threads; `Intake` is what a source calls
for each message it receives (decode, enqueue, nothing else).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from detector.engine.readings import NOT_SUBSCRIBED, OWN_OUTPUT, RETAINED, Reading, Rejection
from detector.worker.payloads import PayloadDecoder

if TYPE_CHECKING:
    from detector.worker.sparkplug import Ended
    from detector.worker.topics import Labels

AckToken = Any
"""What a source needs to acknowledge one message (MQTT: ``(mid, qos, generation)``; NATS:
the JetStream reply subject). None: nothing to acknowledge (MQTT QoS 0). Only the source
that made a token reads it."""


class Inbound:
    """One message after decoding, waiting for the detection thread."""

    __slots__ = ("ended", "labels", "readings", "redelivered", "rejections", "token", "topic")

    def __init__(
        self,
        token: AckToken,
        topic: bytes,
        readings: list[Reading],
        rejections: list[Rejection],
        ended: list[Ended] | None = None,
        labels: Labels | None = None,
        redelivered: bool = False,
    ) -> None:
        self.token = token
        self.topic = topic
        self.readings = readings
        self.rejections = rejections
        self.ended = ended
        """Devices whose series this message ended (a Sparkplug DEATH), or None."""
        self.labels = labels
        """The labels of the message's topic (site, line, ...), or None."""
        self.redelivered = redelivered
        """The source sent it before and it was not acked (NATS); the MQTT source never says
        so. The worker matches these to the messages whose outputs it still waits for
        (`detector.worker.resends`)."""


def _size(item: Inbound) -> int:
    # A message that decoded to nothing still takes a place (and is acked like the rest).
    return max(1, len(item.readings) + len(item.rejections))


class IngestQueue:
    """Bounded hand-over from the network thread to the detection thread.

    `put` waits while the queue is full (backpressure: with QoS 1 and a bounded receive
    window the broker then holds the rest); `drain` blocks for the first item only and then
    takes whatever has accumulated. After `close`, `put` drops (unacknowledged, so the
    broker redelivers) and never blocks, so shutdown cannot deadlock on a full queue.

    The common `put` takes no lock: ``deque.append`` is atomic, and the consumer is only
    notified when it announced that it waits (a ``Condition.notify`` per message cost more
    than decoding it).

    The queue is full at `maxsize` messages or at `max_readings` readings, whichever comes
    first: one gateway message may carry 1,000 readings, and a bound in messages alone let
    a burst of them hold millions of decoded readings (measured: +20 MB RSS while 100,000
    series arrived in 1,000-reading messages). The reading count is two counters, each
    written by one thread only (put by the producer, taken by the consumer), so it needs no
    lock either.
    """

    def __init__(self, maxsize: int, max_readings: int | None = None) -> None:
        self.maxsize = maxsize
        self.max_readings = max_readings if max_readings is not None else 50 * maxsize
        self._put_readings = 0
        self._taken_readings = 0
        self._items: deque[Inbound] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._waiting = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def readings(self) -> int:
        """Readings (and rejections) waiting in the queue."""
        return self._put_readings - self._taken_readings

    def has_room(self, messages: int = 1) -> bool:
        """Whether `messages` more fit without `put` waiting (a source that must not block
        its event loop checks this before it fetches more)."""
        return (
            len(self._items) + messages <= self.maxsize
            and self.readings + messages <= self.max_readings
        )

    def _full(self) -> bool:
        return len(self._items) >= self.maxsize or self.readings >= self.max_readings

    def put(self, item: Inbound, wait: bool = True) -> bool:
        """Append `item`; waits while full unless `wait` is False (a source that bounds what
        it fetches by `has_room` and must not block its event loop). False once closed."""
        if not wait:
            if self._closed:
                return False
        elif self._closed or self._full():
            with self._lock:
                while self._full() and not self._closed:
                    self._not_full.wait(0.5)
                if self._closed:
                    return False
        self._put_readings += _size(item)
        self._items.append(item)
        # `_waiting` is set under the lock *before* the consumer looks at the deque, so an
        # append it did not see always finds the flag set here.
        if self._waiting:
            with self._lock:
                self._not_empty.notify()
        return True

    def drain(
        self, max_readings: int, timeout_s: float, linger_s: float = 0.0, linger_below: int = 64
    ) -> list[Inbound]:
        """Everything available (at least one message, at most ~`max_readings` readings).

        Blocks up to `timeout_s` for the first message. If fewer than `linger_below`
        messages are there then, it sleeps `linger_s` once before taking them (see `Worker`
        for why); a queue with `linger_below` or more never lingers.
        """
        items = self._items
        if not items and not self._closed:
            with self._lock:
                self._waiting = True
                try:
                    if not items and not self._closed:
                        self._not_empty.wait(timeout_s)
                finally:
                    self._waiting = False
        if linger_s > 0 and items and len(items) < linger_below and not self._closed:
            time.sleep(linger_s)
        out: list[Inbound] = []
        n = 0
        popleft = items.popleft
        while items and n < max_readings:
            item = popleft()
            out.append(item)
            n += _size(item)
        # Full before this drain (what was taken still counted): the producer may wait.
        was_full = len(items) + len(out) >= self.maxsize or self.readings >= self.max_readings
        self._taken_readings += n
        if out and was_full:
            with self._lock:
                self._not_full.notify_all()
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()


SKIP_REASONS = frozenset({RETAINED, OWN_OUTPUT, NOT_SUBSCRIBED})
"""Reasons of messages that are not input at all (`Intake.skipped`), not bad input."""
_SKIPPED = {
    RETAINED: "retained message sent on subscribe: an old reading replayed, not a new one",
    OWN_OUTPUT: "the worker's own output topic: never input (not dead-lettered: a loop)",
    NOT_SUBSCRIBED: "matches no configured filter: a subscription left by an earlier run",
}


class Intake:
    """What a source hands each received message to: decode (bounded, never raises) and
    enqueue for the detection thread. Runs on the source's network thread; `Worker` drains
    `queue`.

    Args:
        decoder: topic and payload to readings and rejections.
        queue_size, max_batch: bounds of the queue, in messages and (4 x `max_batch`)
            readings. No defaults here: `detector.config.settings.WorkerSettings` states them.
    """

    def __init__(self, decoder: PayloadDecoder, *, queue_size: int, max_batch: int) -> None:
        self.decoder = decoder
        self.queue = IngestQueue(queue_size, max_readings=4 * max_batch)

    def message(self, topic: bytes, payload: bytes, token: AckToken, wait: bool = True) -> bool:
        """Decode and enqueue one message (``sensors/...`` topic); False when the queue was
        closed (the message is then not acknowledged, and the source redelivers it)."""
        decoded = self.decoder.decode(topic, payload)
        item = Inbound(
            token, topic, decoded.readings, decoded.rejections, decoded.ended, decoded.labels
        )
        return self.queue.put(item, wait)

    def decoded(
        self,
        topic: bytes,
        token: AckToken,
        readings: list[Reading],
        rejections: list[Rejection],
        wait: bool = True,
        labels: Labels | None = None,
        redelivered: bool = False,
    ) -> bool:
        """Enqueue a message the source decoded (and checked) itself."""
        item = Inbound(token, topic, readings, rejections, None, labels, redelivered)
        return self.queue.put(item, wait)

    def skipped(self, topic: bytes, payload: bytes, token: AckToken, reason: str) -> bool:
        """A message that is not input at all (`detector.engine.readings` reasons: retained, the
        worker's own output, a stale subscription): counted and acked, never decoded."""
        text = topic.decode("utf-8", errors="replace")
        rejection = Rejection(reason, _SKIPPED.get(reason, reason), text, payload)
        return self.queue.put(Inbound(token, topic, [], [rejection]))

    def mqtt_message(
        self,
        topic: bytes,
        payload: bytes,
        mid: int,
        qos: int,
        generation: int,
        skip: str | None = None,
    ) -> bool:
        """paho's on_message (`detector.worker.mqtt_client.MessageHandler`): the ack token is
        ``(mid, qos, generation)``, none for QoS 0. False when the queue was closed (the
        message is not acknowledged, and the broker sends it again)."""
        token = (mid, qos, generation) if qos else None
        if skip is not None:
            return self.skipped(topic, payload, token, skip)
        return self.message(topic, payload, token)
