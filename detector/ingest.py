"""The hand-over from paho's network thread to the detection thread.

`Inbound` is one decoded MQTT message with what is needed to acknowledge it later;
`IngestQueue` is the bounded queue between the two threads.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from detector.readings import Reading, Rejection


class Inbound:
    """One MQTT message after decoding, waiting for the detection thread."""

    __slots__ = ("generation", "mid", "qos", "readings", "rejections", "topic")

    def __init__(
        self,
        mid: int,
        qos: int,
        generation: int,
        topic: bytes,
        readings: list[Reading],
        rejections: list[Rejection],
    ) -> None:
        self.mid = mid
        self.qos = qos
        self.generation = generation
        self.topic = topic
        self.readings = readings
        self.rejections = rejections


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

    def _full(self) -> bool:
        return len(self._items) >= self.maxsize or self.readings >= self.max_readings

    def put(self, item: Inbound) -> bool:
        if self._closed or self._full():
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
