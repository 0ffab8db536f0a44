"""The worker loop: MQTT messages -> ingest queue -> detection core -> sinks, metrics, acks.

Two threads do the work. paho's network thread decodes each message (`PayloadDecoder`,
bounded, never raises) and puts it on the bounded `IngestQueue`. The detection thread blocks
for the first message, takes everything that has accumulated since (up to ``max_batch``
readings), runs `DetectionCore.process` once, publishes alert events, dead letters and
(opt-in) scores, updates the metrics and only then acknowledges the batch's messages. A
worker killed at any point loses nothing: unacknowledged messages are redelivered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from detector.alerts import MqttAlertSink, Publisher, ScoreStream
from detector.deadletter import DeadLetterPublisher
from detector.events import AlertSink, BatchResult
from detector.metrics import WorkerMetrics
from detector.payloads import PayloadDecoder
from detector.ratelimit import RateLimitedLog
from detector.readings import Reading, Rejection

log = logging.getLogger("iotad.worker")

HOUSEKEEPING_S = 1.0
EVICT_EVERY_S = 60.0
FLUSH_TIMEOUT_S = 5.0


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


class IngestQueue:
    """Bounded hand-over from the network thread to the detection thread.

    `put` waits while the queue is full (backpressure: with QoS 1 and a bounded receive
    window the broker then holds the rest); `drain` blocks for the first item only and then
    takes whatever has accumulated. After `close`, `put` drops (unacknowledged, so the
    broker redelivers) and never blocks, so shutdown cannot deadlock on a full queue.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Inbound] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Inbound) -> bool:
        with self._lock:
            while len(self._items) >= self.maxsize and not self._closed:
                self._not_full.wait(0.5)
            if self._closed:
                return False
            self._items.append(item)
            self._not_empty.notify()
        return True

    def drain(self, max_readings: int, timeout_s: float) -> list[Inbound]:
        """Everything available (at least one message, at most ~`max_readings` readings)."""
        with self._lock:
            if not self._items and not self._closed:
                self._not_empty.wait(timeout_s)
            out: list[Inbound] = []
            n = 0
            items = self._items
            while items and n < max_readings:
                item = items.popleft()
                out.append(item)
                n += len(item.readings) + len(item.rejections)
            if out:
                self._not_full.notify_all()
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()


class Core(Protocol):
    """The part of `detector.core.DetectionCore` the worker uses."""

    def process(self, readings: Sequence[Reading], now: float | None = None) -> BatchResult: ...

    @property
    def active_series(self) -> int: ...

    @property
    def warming_series(self) -> int: ...

    def evict_idle(self, now: float) -> int: ...


class Acker(Protocol):
    """Acknowledges processed messages (the MQTT connection)."""

    def ack(self, mid: int, qos: int, generation: int) -> bool: ...


class Worker:
    """Ties the queue, the core, the sinks and the metrics together on a detection thread.

    Args:
        core: the detection core (model loaded).
        metrics: where to count.
        decoder: turns messages into readings (runs on the network thread).
        publisher: where dead letters, scores and (via `sinks`) alerts go.
        acker: acknowledges messages once processed; set later with `attach` when the
            connection needs the worker's `on_message` first.
        sinks: alert sinks; each gets every event.
        deadletter: the dead-letter publisher.
        scores: the opt-in stream of scored readings (None: off).
        queue_size, max_batch: bounds of the hand-over (messages) and of one drain (readings).
        reject_log: the rate-limited log for rejected input.
        clock: wall clock (epoch seconds), for lag and eviction.
    """

    def __init__(
        self,
        core: Core,
        metrics: WorkerMetrics,
        decoder: PayloadDecoder,
        *,
        sinks: Sequence[AlertSink] = (),
        deadletter: DeadLetterPublisher | None = None,
        scores: ScoreStream | None = None,
        acker: Acker | None = None,
        queue_size: int = 20_000,
        max_batch: int = 8192,
        reject_log: RateLimitedLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.metrics = metrics
        self.decoder = decoder
        self.sinks = list(sinks)
        self.deadletter = deadletter
        self.scores = scores
        self.acker = acker
        self.queue = IngestQueue(queue_size)
        self.max_batch = max_batch
        self.reject_log = reject_log or RateLimitedLog(logging.getLogger("iotad.rejects"))
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rejected_children: dict[str, Any] = {}
        self._next_housekeeping = 0.0
        self._next_evict = time.monotonic() + EVICT_EVERY_S
        self.failed: BaseException | None = None
        self.batches = 0

    def attach(self, acker: Acker) -> None:
        self.acker = acker

    # -- network thread ------------------------------------------------------------------

    def on_message(self, topic: bytes, payload: bytes, mid: int, qos: int, generation: int) -> None:
        """paho's on_message: decode and enqueue, nothing else (keep-alives depend on it)."""
        decoded = self.decoder.decode(topic, payload)
        self.queue.put(Inbound(mid, qos, generation, topic, decoded.readings, decoded.rejections))

    # -- detection thread ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="iotad-detection", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking messages, finish the batch in flight, return when the thread ended."""
        self._stop.set()
        self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                items = self.queue.drain(self.max_batch, timeout_s=0.25)
                if items and not self._stop.is_set():
                    self.process(items)
                self._housekeeping()
        except BaseException as exc:  # reported by run_cli, which exits non-zero
            self.failed = exc
            log.exception("detection thread failed")

    def process(self, items: list[Inbound]) -> BatchResult:
        """Process one drained batch of messages and acknowledge them."""
        m = self.metrics
        readings: list[Reading] = []
        rejections: list[Rejection] = []
        for item in items:
            if item.readings:
                readings.extend(item.readings)
            if item.rejections:
                rejections.extend(item.rejections)
        result = (
            self.core.process(readings)
            if readings
            else BatchResult(scored=[], events=[], dropped=[])
        )
        now = self.clock()
        m.messages.inc(len(items))
        m.readings.inc(len(readings) + len(rejections))
        m.accepted.inc(len(readings) - len(result.dropped))
        m.batch_size.observe(len(readings) + len(rejections))
        if rejections:
            self._reject(rejections)
        if result.dropped:
            self._dropped(items, result)
        if readings:
            self._record(readings, result, now)
        if result.events:
            self._alert(result)
        if self.scores is not None and result.scored:
            failed = self.scores.send_many(result.scored)
            if failed:
                m.publish_failed.labels("scores").inc(failed)
        if self.acker is not None:
            ack = self.acker.ack
            for item in items:
                if item.qos:
                    ack(item.mid, item.qos, item.generation)
        m.queue_depth.set(len(self.queue))
        self.batches += 1
        return result

    def _record(self, readings: list[Reading], result: BatchResult, now: float) -> None:
        m = self.metrics
        if result.scored:
            m.scored.inc(len(result.scored))
            anomalies = sum(1 for s in result.scored if s.is_anomaly)
            if anomalies:
                m.anomalies.inc(anomalies)
            if m.series_devices:
                for s in result.scored:
                    r = s.reading
                    m.set_series(r.device, r.metric, r.value, s.expected, s.score)
        if result.warming:
            m.warming.inc(result.warming)
        if result.model_batch:
            m.inference_seconds.observe(result.inference_s)
        ts = np.fromiter((r.ts for r in readings), dtype=np.float64, count=len(readings))
        m.lag.observe_many(np.maximum(now - ts, 0.0))

    def _alert(self, result: BatchResult) -> None:
        m = self.metrics
        for event in result.events:
            m.alert_events.labels(event.state).inc()
            log.info(
                "alert %s %s/%s score %.2f (value %g, expected %g)",
                event.state,
                event.device,
                event.metric,
                event.score,
                event.value,
                event.expected,
            )
            for sink in self.sinks:
                try:
                    sink.send(event)
                except Exception as exc:  # one broken sink must not stop detection
                    self.reject_log.warning(
                        f"sink {type(sink).__name__}", "alert sink failed: %s", exc
                    )
        # Confirmed by the broker before the input is acknowledged: no alert lost to a crash.
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None and not flush(FLUSH_TIMEOUT_S):
                m.publish_failed.labels("alert").inc()

    def _reject(self, rejections: list[Rejection]) -> None:
        for reason, count in Counter(r.reason for r in rejections).items():
            self._rejected(reason).inc(count)
        for rej in rejections:
            self.reject_log.warning(
                rej.reason, "rejected (%s) on %r: %s", rej.reason, rej.topic, rej.detail
            )
            self._send_dead(rej.reason, rej.detail, rej.topic, rej.payload)

    def _dropped(self, items: list[Inbound], result: BatchResult) -> None:
        topic_of = {id(r): item.topic for item in items for r in item.readings}
        for reason, count in Counter(d.reason for d in result.dropped).items():
            self._rejected(reason).inc(count)
        for d in result.dropped:
            r = d.reading
            topic = topic_of.get(id(r), b"").decode("utf-8", errors="replace")
            self.reject_log.warning(
                d.reason, "dropped (%s) %s/%s at ts %s", d.reason, r.device, r.metric, r.ts
            )
            if self.deadletter is not None:
                if self.deadletter.send_dropped(d, topic):
                    self.metrics.deadletter.inc()
                else:
                    self.metrics.publish_failed.labels("deadletter").inc()

    def _send_dead(self, reason: str, detail: str, topic: str, payload: bytes) -> None:
        if self.deadletter is None:
            return
        if self.deadletter.send(reason, detail, topic, payload):
            self.metrics.deadletter.inc()
        else:
            self.metrics.publish_failed.labels("deadletter").inc()

    def _rejected(self, reason: str) -> Any:
        child = self._rejected_children.get(reason)
        if child is None:
            child = self._rejected_children[reason] = self.metrics.rejected.labels(reason)
        return child

    def _housekeeping(self) -> None:
        mono = time.monotonic()
        if mono < self._next_housekeeping:
            return
        self._next_housekeeping = mono + HOUSEKEEPING_S
        m = self.metrics
        m.queue_depth.set(len(self.queue))
        m.series_active.set(self.core.active_series)
        m.series_warming.set(self.core.warming_series)
        self.reject_log.flush()
        if mono >= self._next_evict:
            self._next_evict = mono + EVICT_EVERY_S
            evicted = self.core.evict_idle(self.clock())
            if evicted:
                log.info("evicted %d idle series", evicted)


def make_outputs(
    publisher: Publisher,
    *,
    worker_id: str,
    model_version: str,
    alerts_prefix: str,
    deadletter_topic: str,
    deadletter_payload_bytes: int,
    scores: bool,
    scores_prefix: str,
) -> tuple[MqttAlertSink, DeadLetterPublisher, ScoreStream | None]:
    """The worker's MQTT outputs: alert sink, dead-letter publisher, optional score stream."""
    sink = MqttAlertSink(
        publisher, prefix=alerts_prefix, model_version=model_version, worker_id=worker_id
    )
    dead = DeadLetterPublisher(
        publisher,
        topic=deadletter_topic,
        worker_id=worker_id,
        max_payload_bytes=deadletter_payload_bytes,
    )
    stream = ScoreStream(publisher, scores_prefix) if scores else None
    return sink, dead, stream
