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

from detector.alerts import Delivery, MqttAlertSink, Publisher, ScoreStream
from detector.deadletter import DeadLetterPublisher
from detector.events import AlertSink, BatchResult, Dropped
from detector.ingest import Inbound, IngestQueue
from detector.memory import release_free_memory
from detector.metrics import WorkerMetrics
from detector.payloads import PayloadDecoder
from detector.ratelimit import RateLimitedLog
from detector.readings import (
    NOT_DEAD_LETTERED,
    NOT_SUBSCRIBED,
    OWN_OUTPUT,
    RETAINED,
    Reading,
    Rejection,
)

log = logging.getLogger("iotad.worker")

HOUSEKEEPING_S = 1.0
EVICT_EVERY_S = 60.0
"""The longest interval between sweeps for idle series (shorter when series are evicted
sooner than in a few minutes, see `evict_interval`)."""


def evict_interval(idle_evict_s: float) -> float:
    """Sweep often enough that a series is evicted within ~25 % of its idle time."""
    return min(EVICT_EVERY_S, max(0.25, idle_evict_s / 4))


_SKIPPED = {
    RETAINED: "retained message sent on subscribe: an old reading replayed, not a new one",
    OWN_OUTPUT: "the worker's own output topic: never input (not dead-lettered: a loop)",
    NOT_SUBSCRIBED: "matches no configured filter: a subscription left by an earlier run",
}

CONFIRM_TIMEOUT_S = 10.0
"""How long acks of a batch wait for the broker to confirm the alerts it raised."""
HELD_POLL_S = 0.005


class _Held:
    """Messages whose acks wait until the alerts they raised are confirmed by the broker."""

    __slots__ = ("deadline", "deliveries", "items")

    def __init__(self, items: list[Inbound], deliveries: list[Delivery], deadline: float) -> None:
        self.items = items
        self.deliveries = deliveries
        self.deadline = deadline


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

    def ack_many(self, acks: Sequence[tuple[int, int, int]]) -> int:
        """Acknowledge ``(mid, qos, generation)`` triples; returns how many were sent."""
        ...


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
            No defaults here: `detector.settings.WorkerSettings` states them (and their
            bounds) once.
        linger_s, linger_above: under load (more than `linger_above` messages/s over the
            last second), wait `linger_s` when fewer than 64 messages are waiting so that
            more make the batch. Measured (2 cores, QoS 1 backlog): waking per message ran
            batches of ~5, and the network and detection threads fighting over the GIL cost
            twice the CPU per message in both; lingering gave batches of 50-150 and 1.5-2x
            the throughput. Lingering only after waking on an *empty* queue was not enough
            on a quiet machine: a fast detection thread always found a few messages, never
            lingered, and ran batches of 12-17 at half the throughput (6.4k against 12.6k
            readings/s). Below the rate, batches are taken at once (no added latency when
            it is not needed); 0 disables lingering.
        evict_every_s: how often idle series are swept out (see `evict_interval`).
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
        queue_size: int,
        max_batch: int,
        linger_s: float,
        linger_above: float,
        evict_every_s: float = EVICT_EVERY_S,
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
        self.queue = IngestQueue(queue_size, max_readings=4 * max_batch)
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.linger_above = linger_above
        self.rate = 0.0  # messages/s over the last housekeeping period
        self._rate_count = 0
        self._rate_since = time.monotonic()
        self.reject_log = reject_log or RateLimitedLog(logging.getLogger("iotad.rejects"))
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rejected_children: dict[str, Any] = {}
        self._held: deque[_Held] = deque()
        self._next_housekeeping = 0.0
        self.evict_every_s = evict_every_s
        self._next_evict = time.monotonic() + evict_every_s
        self._trimmed_at = 0
        self.failed: BaseException | None = None
        self.batches = 0

    def attach(self, acker: Acker) -> None:
        self.acker = acker

    # -- network thread ------------------------------------------------------------------

    def on_message(
        self,
        topic: bytes,
        payload: bytes,
        mid: int,
        qos: int,
        generation: int,
        skip: str | None = None,
    ) -> None:
        """paho's on_message: decode and enqueue, nothing else (keep-alives depend on it).

        `skip` is the MQTT adapter's reason why the message is not input at all (retained,
        the worker's own output, a stale subscription): it is counted and acked, not decoded.
        """
        if skip is not None:
            text = topic.decode("utf-8", errors="replace")
            rejection = Rejection(skip, _SKIPPED.get(skip, skip), text, payload)
            self.queue.put(Inbound(mid, qos, generation, topic, [], [rejection]))
            return
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
                # Poll quickly while acks wait for alert confirmations, else block longer.
                timeout = HELD_POLL_S if self._held else 0.25
                linger = self.linger_s if self.rate >= self.linger_above else 0.0
                items = self.queue.drain(self.max_batch, timeout, linger)
                if items and not self._stop.is_set():
                    self.process(items)
                if self._held:
                    self.release_held()
                self._housekeeping()
            # Give the last batch's alerts a moment to be confirmed, then ack what we can.
            deadline = time.monotonic() + 2.0
            while self._held and time.monotonic() < deadline:
                self.release_held()
                time.sleep(HELD_POLL_S)
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
        result = self._detect(readings) if readings else BatchResult([], [], [])
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
        deliveries = self._alert(result) if result.events else []
        if self.scores is not None and result.scored:
            failed = self.scores.send_many(result.scored)
            if failed:
                m.publish_failed.labels("scores").inc(failed)
        if deliveries:
            # The messages that raised alerts are acked once the broker has the alerts: a
            # crash in between redelivers them rather than losing the alert. Only those wait:
            # holding the whole batch kept the receive window full, and the broker's answer
            # then queued behind thousands of messages (0.5 s holds, 1 s lag at 4k/s).
            causes = {(e.device, e.metric, e.ts) for e in result.events}
            held: list[Inbound] = []
            now_ok: list[Inbound] = []
            for i in items:
                raised = any((r.device, r.metric, r.ts) in causes for r in i.readings)
                (held if raised else now_ok).append(i)
            self._ack(now_ok)
            if held:
                self._held.append(_Held(held, deliveries, time.monotonic() + CONFIRM_TIMEOUT_S))
        else:
            self._ack(items)
        m.queue_depth.set(len(self.queue))
        self.batches += 1
        self._rate_count += len(items)
        return result

    def _detect(self, readings: list[Reading]) -> BatchResult:
        """`core.process`, but a failure drops the batch (reason ``core_error``) instead of
        killing the thread: a message that crashes the core would otherwise be redelivered
        to every restart, forever."""
        try:
            return self.core.process(readings)
        except Exception as exc:
            self.reject_log.log(
                logging.ERROR,
                "core_error",
                "detection core failed on %d readings: %r",
                len(readings),
                exc,
            )
            return BatchResult([], [], [Dropped(r, "core_error") for r in readings])

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

    def _ack(self, items: list[Inbound]) -> None:
        if self.acker is None:
            return
        acks = [(item.mid, item.qos, item.generation) for item in items if item.qos]
        if acks:
            self.acker.ack_many(acks)

    @property
    def acks_held(self) -> bool:
        """Whether some processed messages still wait for their alerts to be confirmed."""
        return bool(self._held)

    def release_held(self) -> None:
        """Ack held messages whose alerts are confirmed (or that waited too long)."""
        now = time.monotonic()
        while self._held:
            held = self._held[0]
            if not all(d.done() for d in held.deliveries):
                if now < held.deadline:
                    return
                self.metrics.publish_failed.labels("alert_unconfirmed").inc()
            self._held.popleft()
            self._ack(held.items)

    def _alert(self, result: BatchResult) -> list[Delivery]:
        """Send the batch's events to every sink; returns the MQTT publishes to confirm."""
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
        deliveries: list[Delivery] = []
        for sink in self.sinks:
            take = getattr(sink, "take_deliveries", None)
            if take is not None:
                deliveries.extend(take())
        return deliveries

    def _reject(self, rejections: list[Rejection]) -> None:
        for reason, count in Counter(r.reason for r in rejections).items():
            self._rejected(reason).inc(count)
        for rej in rejections:
            self.reject_log.warning(
                rej.reason, "rejected (%s) on %r: %s", rej.reason, rej.topic, rej.detail
            )
            if rej.reason not in NOT_DEAD_LETTERED:
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
                self._count_dead(self.deadletter.send_dropped(d, topic))

    def _send_dead(self, reason: str, detail: str, topic: str, payload: bytes) -> None:
        if self.deadletter is not None:
            self._count_dead(self.deadletter.send(reason, detail, topic, payload))

    def _count_dead(self, sent: bool) -> None:
        if sent:
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
        self.rate = self._rate_count / max(mono - self._rate_since, 1e-3)
        self._rate_count, self._rate_since = 0, mono
        m = self.metrics
        m.queue_depth.set(len(self.queue))
        m.series_active.set(self.core.active_series)
        m.series_warming.set(self.core.warming_series)
        self.reject_log.flush()
        trim = False
        if mono >= self._next_evict:
            self._next_evict = mono + self.evict_every_s
            evicted = self.core.evict_idle(self.clock())
            if evicted:
                log.info("evicted %d idle series", evicted)
            trim = True
        active = self.core.active_series
        if trim or active >= self._trimmed_at * 1.1 + 1000:
            # Growing the series storage copies every per-series array; give the old
            # copies (and a burst's decoded messages) back rather than keep them.
            self._trimmed_at = active
            release_free_memory()


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
