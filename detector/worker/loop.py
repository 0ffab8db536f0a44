"""The worker loop: source messages -> ingest queue -> detection core -> sinks, metrics, acks.

Two threads do the work. The source's network thread (paho's, or the NATS source's event
loop) decodes each message through the `Intake` (bounded, never raises) and puts it on the
bounded queue with an opaque ack token. The detection thread blocks for the first message,
takes everything that has accumulated since (up to ``max_batch`` readings), runs
`DetectionCore.process` once, publishes alert events, dead letters and (opt-in) scores,
updates the metrics and only then hands the batch's tokens back to the source to acknowledge.
A worker killed at any point loses nothing: unacknowledged messages are redelivered.
Outputs the source gave up on (NATS: `lost`) are sent again until confirmed, and the messages
that raised them wait for that (`detector.worker.resends`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from detector.engine.events import AlertEvent, AlertSink, BatchResult, Dropped, Eviction
from detector.engine.readings import CORE_ERROR, NOT_DEAD_LETTERED, Reading, Rejection
from detector.worker.alerts import Delivery, MqttAlertSink, Publisher, ScoreStream
from detector.worker.deadletter import DeadLetterPublisher
from detector.worker.ingest import AckToken, Inbound, Intake
from detector.worker.memory import release_free_memory
from detector.worker.metrics import WorkerMetrics
from detector.worker.ratelimit import RateLimitedLog
from detector.worker.resends import Resends, claim
from detector.worker.topics import Labels

log = logging.getLogger("iotad.worker")

HOUSEKEEPING_S = 1.0
EVICT_EVERY_S = 60.0
"""The longest interval between sweeps for idle series (shorter when series are evicted
sooner than in a few minutes, see `evict_interval`)."""


def evict_interval(idle_evict_s: float) -> float:
    """Sweep often enough that a series is evicted within ~25 % of its idle time."""
    return min(EVICT_EVERY_S, max(0.25, idle_evict_s / 4))


CONFIRM_TIMEOUT_S = 10.0
"""How long acks of a batch wait for the broker to confirm the alerts it raised."""
HELD_POLL_S = 0.005


class _Held:
    """Messages whose acks wait until the alerts and dead letters they raised are confirmed
    by the broker."""

    __slots__ = ("alerts", "dead", "deadline", "items")

    def __init__(
        self,
        items: list[Inbound],
        alerts: list[Delivery],
        dead: list[Delivery],
        deadline: float,
    ) -> None:
        self.items = items
        self.alerts = alerts
        self.dead = dead
        self.deadline = deadline


class Core(Protocol):
    """The part of `detector.engine.core.DetectionCore` the worker uses."""

    def process(self, readings: Sequence[Reading], now: float | None = None) -> BatchResult: ...

    @property
    def active_series(self) -> int: ...

    @property
    def warming_series(self) -> int: ...

    def evict_idle(self, now: float) -> Eviction: ...

    def end_devices(self, ended: Mapping[str, float]) -> list[AlertEvent]: ...


class Acker(Protocol):
    """Acknowledges processed messages: the source they came from."""

    def ack_many(self, tokens: Sequence[AckToken]) -> int:
        """Acknowledge the messages of these tokens; returns how many acks were sent."""
        ...


class RulesPoll(Protocol):
    """Reloads the rules file when it changed or a reload was asked for
    (`detector.worker.rules_reload.RulesReloader`), on the detection thread between batches."""

    def poll(self) -> bool: ...


class Checkpoints(Protocol):
    """Saves the core's state now and then (`detector.worker.checkpoint.Checkpointer` to a file,
    `detector.worker.nats_checkpoint.PartitionCheckpointer` to a NATS bucket)."""

    def due(self) -> bool: ...

    def save(self, core: Any) -> bool: ...


class Reloader(Protocol):
    """Swaps the model between batches (`detector.worker.model_reload.ModelReloader`)."""

    def due(self) -> bool: ...

    def reload(self, core: Any) -> Any:
        """The new core, carrying `core`'s state; None to keep `core`."""
        ...


class Worker:
    """Ties the queue, the core, the sinks and the metrics together on a detection thread.

    Args:
        core: the detection core (model loaded).
        metrics: where to count.
        intake: where the source puts decoded messages (the worker drains its queue).
        acker: the source; acknowledges messages once processed.
        sinks: alert sinks; each gets every event, and the worker waits for the deliveries
            each hands back (`AlertSink.take_deliveries`) before acking what raised them.
        deadletter: the dead-letter publisher.
        scores: the opt-in stream of scored readings (None: off).
        max_batch: readings of one drain at most. No default here:
            `detector.config.settings.WorkerSettings` states it (and its bounds) once.
        linger_s, linger_above_msgs_per_s: under load (more than `linger_above_msgs_per_s` messages
            over the last second), wait `linger_s` when fewer than 64 messages are waiting so that
            more make the batch. Measured (2 cores, QoS 1 backlog): waking per message ran batches
            of ~5, and the network and detection threads fighting over the GIL cost twice the CPU
            per message in both; lingering gave batches of 50-150 and 1.5-2x the throughput.
            Lingering only after waking on an *empty* queue was not enough on a quiet machine: a
            fast detection thread always found a few messages, never lingered, and ran batches of
            12-17 at half the throughput (6.4k against 12.6k readings/s). Below the rate, batches
            are taken at once (no added latency when it is not needed); 0 disables lingering.
        confirm_timeout_s: how long acks wait for the broker to confirm the alerts and dead
            letters they raised; then they are sent all the same, and the alerts counted as
            unconfirmed. A source whose deliveries end by themselves (NATS: confirmed, or
            `lost` after its retries) is given more than those take.
        checkpoints: saves the core's state when due, on the detection thread between
            batches and never while acks wait for alert confirmations: a checkpoint then
            holds no reading the source would redeliver (the restored core would drop it as
            a duplicate). None: no checkpoints.
        reloader: swaps the model on the detection thread between two batches, so each
            batch is processed whole by one model (None: the model never changes).
        evict_every_s: how often idle series are swept out (see `evict_interval`).
        rules: reloads the rules file between batches (None: no rules file).
        reject_log: the rate-limited log for rejected input.
        clock: wall clock (epoch seconds), for lag and eviction.
        max_labelled_series: series whose topic labels (site, line, ...) are remembered for
            their alerts; past it the series labelled longest ago is forgotten (its alerts
            then carry no labels until its next message).
    """

    def __init__(
        self,
        core: Core,
        metrics: WorkerMetrics,
        intake: Intake,
        *,
        acker: Acker,
        sinks: Sequence[AlertSink] = (),
        deadletter: DeadLetterPublisher | None = None,
        scores: ScoreStream | None = None,
        max_batch: int,
        linger_s: float,
        linger_above_msgs_per_s: float,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
        checkpoints: Checkpoints | None = None,
        reloader: Reloader | None = None,
        evict_every_s: float = EVICT_EVERY_S,
        rules: RulesPoll | None = None,
        reject_log: RateLimitedLog | None = None,
        clock: Callable[[], float] = time.time,
        max_labelled_series: int = 100_000,
    ) -> None:
        self.core = core
        self.metrics = metrics
        self.intake = intake
        self.queue = intake.queue
        self.sinks = list(sinks)
        self.deadletter = deadletter
        self.scores = scores
        self.acker = acker
        self.checkpoints = checkpoints
        self.reloader = reloader
        self.confirm_timeout_s = confirm_timeout_s
        self.rules = rules
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.linger_above_msgs_per_s = linger_above_msgs_per_s
        self.rate = 0.0  # messages/s over the last housekeeping period
        self._rate_count = 0
        self._rate_since = time.monotonic()
        self.reject_log = reject_log or RateLimitedLog(logging.getLogger("iotad.rejects"))
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rejected_children: dict[str, Any] = {}
        self._held: deque[_Held] = deque()
        self.resends = Resends()
        self._next_housekeeping = 0.0
        self.evict_every_s = evict_every_s
        self._next_evict = time.monotonic() + evict_every_s
        self._trimmed_at = 0
        self.failed: BaseException | None = None
        self.batches = 0
        # series key -> the labels of its latest message's topic (`detector.worker.topics`)
        self.series_labels: dict[str, Labels] = {}
        self.max_labelled_series = max_labelled_series

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
                timeout = HELD_POLL_S if self._held or self.resends else 0.25
                linger = self.linger_s if self.rate >= self.linger_above_msgs_per_s else 0.0
                items = self.queue.drain(self.max_batch, timeout, linger)
                if items and not self._stop.is_set():
                    self.process(items)
                if self._held or self.resends:
                    self.release_held()
                if self.rules is not None:
                    self._poll_rules()
                if self.checkpoints is not None and not self.acks_held and self.checkpoints.due():
                    self.checkpoints.save(self.core)
                if self.reloader is not None and self.reloader.due():
                    self._swap_model()
                self._housekeeping()
            # Give the last batch's alerts a moment to be confirmed, then ack what we can.
            deadline = time.monotonic() + 2.0
            while self.acks_held and time.monotonic() < deadline:
                self.release_held()
                time.sleep(HELD_POLL_S)
        except BaseException as exc:  # reported by run_cli, which exits non-zero
            self.failed = exc
            log.exception("detection thread failed")

    def _swap_model(self) -> None:
        """Between two batches: the next batch goes to the new model's core, if any."""
        assert self.reloader is not None
        core = self.reloader.reload(self.core)
        if core is not None:
            self.core = core
            # The old core's arrays (as large as the new one's) go back to the system now,
            # not at the next eviction sweep.
            release_free_memory()

    def process(self, items: list[Inbound]) -> BatchResult:
        """Process one drained batch of messages and acknowledge them."""
        m = self.metrics
        if self.resends or self._held:
            items = self._claim_copies(items)
            if not items:
                return BatchResult([], [], [])
        readings: list[Reading] = []
        rejections: list[Rejection] = []
        for item in items:
            if item.readings:
                readings.extend(item.readings)
            if item.rejections:
                rejections.extend(item.rejections)
        if any(item.ended for item in items):
            result = self._detect_around_ends(items)
        else:
            result = self._detect(readings) if readings else BatchResult([], [], [])
        now = self.clock()
        m.messages.inc(len(items))
        m.readings.inc(len(readings) + len(rejections))
        m.accepted.inc(len(readings) - len(result.dropped))
        m.batch_size.observe(len(readings) + len(rejections))
        labelled = [item for item in items if item.labels]
        if labelled:
            self._learn_labels(labelled)
        if rejections:
            self._reject(rejections, labelled)
        if result.dropped:
            self._dropped(items, result)
        if readings:
            self._record(readings, result, now)
        alerts = self._alert(result) if result.events else []
        dead = self.deadletter.take_deliveries() if self.deadletter is not None else []
        if result.suppressed:
            self._suppressed(result)
        if self.scores is not None and result.scored:
            failed = self.scores.send_many(result.scored)
            if failed:
                m.publish_failed.labels("scores").inc(failed)
        if alerts or dead:
            # The messages that raised alerts or dead letters are acked once the broker has
            # them: a crash in between redelivers them rather than losing the alert. Only
            # those wait: holding the whole batch kept the receive window full, and the
            # broker's answer then queued behind thousands of messages (0.5 s holds, 1 s lag
            # at 4k/s).
            causes = {(e.device, e.metric, e.ts) for e in result.events} if alerts else set()
            dropped = {id(d.reading) for d in result.dropped} if dead else set()
            held: list[Inbound] = []
            now_ok: list[Inbound] = []
            for i in items:
                # A message that ended devices (a Sparkplug DEATH) raised their events.
                raised = (
                    (bool(alerts) and bool(i.ended))
                    or (bool(dead) and bool(i.rejections))
                    or any(
                        (r.device, r.metric, r.ts) in causes or id(r) in dropped for r in i.readings
                    )
                )
                (held if raised else now_ok).append(i)
            self._ack(now_ok)
            if held:
                deadline = time.monotonic() + self.confirm_timeout_s
                self._held.append(_Held(held, alerts, dead, deadline))
                self.release_held()  # those confirmed already (a test's broker) go now
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
                CORE_ERROR,
                "detection core failed on %d readings: %r",
                len(readings),
                exc,
            )
            return BatchResult([], [], [Dropped(r, CORE_ERROR) for r in readings])

    def _detect_around_ends(self, items: list[Inbound]) -> BatchResult:
        """`_detect`, with the series of the devices a message ended (a Sparkplug DEATH)
        ended in the core between the readings that came before it and those after."""
        result = BatchResult([], [], [])
        pending: list[Reading] = []
        for item in items:
            pending.extend(item.readings)
            if not item.ended:
                continue
            if pending:
                _merge(result, self._detect(pending))
                pending = []
            ended = {e.device: e.ts for e in item.ended}
            try:
                result.events.extend(self.core.end_devices(ended))
            except Exception as exc:  # as for `_detect`: never kill the detection thread
                self.reject_log.log(logging.ERROR, CORE_ERROR, "ending series failed: %r", exc)
                continue
            self.reject_log.log(
                logging.INFO,
                "series_ended",
                "series of %s ended (%s)",
                ", ".join(sorted(ended)[:5]) + (" ..." if len(ended) > 5 else ""),
                item.topic.decode("utf-8", errors="replace"),
            )
        if pending:
            _merge(result, self._detect(pending))
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
                    m.set_series(r.device, r.metric, r.value, s.expected, s.score, s.lower, s.upper)
            active = m.active_anomalies
            if len(active):  # only series with an open episode are followed
                for s in result.scored:
                    r = s.reading
                    active.update(
                        r.device, r.metric, r.value, s.expected, s.lower, s.upper, s.score
                    )
        if result.warming:
            m.warming.inc(result.warming)
        if result.model_batch:
            m.inference_seconds.observe(result.inference_s)
        ts = np.fromiter((r.ts for r in readings), dtype=np.float64, count=len(readings))
        m.lag.observe_many(np.maximum(now - ts, 0.0))

    def _ack(self, items: list[Inbound]) -> None:
        tokens = [item.token for item in items if item.token is not None]
        if tokens:
            self.acker.ack_many(tokens)

    @property
    def acks_held(self) -> bool:
        """Whether some processed messages still wait for their alerts to be confirmed (or
        sent again: `detector.worker.resends`)."""
        return bool(self._held) or bool(self.resends)

    def release_held(self) -> None:
        """Ack held messages whose alerts and dead letters are confirmed (or that waited too
        long). Those of a lost one are not acked: the lost outputs are sent again, and the
        messages acked once they are confirmed (`detector.worker.resends`)."""
        now = time.monotonic()
        failed = self.metrics.publish_failed
        while self._held:
            held = self._held[0]
            alerts_done = all(d.done() for d in held.alerts)
            dead_done = all(d.done() for d in held.dead)
            if not (alerts_done and dead_done) and now < held.deadline:
                break
            self._held.popleft()
            alerts_lost = any(d.lost() for d in held.alerts)
            dead_lost = any(d.lost() for d in held.dead)
            if alerts_lost or not alerts_done:
                failed.labels("alert_unconfirmed").inc()
            if dead_lost or not dead_done:
                failed.labels("deadletter").inc()
            if alerts_lost or dead_lost:
                self._lost(held, "alerts" if alerts_lost else "dead letters", now)
                continue
            self._ack(held.items)
        if self.resends:
            self._send_again(now)

    def _lost(self, held: _Held, what: str, now: float) -> None:
        """Keep the lost outputs of `held` to be sent again, its messages unacked until then;
        with no room left, leave them unacked: they come again as duplicates, and these
        outputs are not sent again (counted)."""
        outputs = [*held.alerts, *held.dead]
        if self.resends.keep(held.items, outputs, now):
            self.reject_log.warning(
                "output_lost",
                "%d messages wait: the broker never confirmed their %s; sending them again",
                len(held.items),
                what,
            )
            return
        dropped = sum(1 for d in outputs if d.lost())
        self.metrics.outputs_dropped.inc(dropped)
        self.reject_log.log(
            logging.ERROR,
            "output_dropped",
            "%d %s never confirmed and not kept (%d outputs wait to be sent again already); "
            "%d messages not acked: they come again",
            dropped,
            what,
            self.resends.outputs,
            len(held.items),
        )

    def _send_again(self, now: float) -> None:
        m = self.metrics
        confirmed, sent = self.resends.poll(now)
        if sent:
            m.outputs_resent.inc(sent)
        if confirmed:
            self._ack(confirmed)
        m.outputs_resending.set(self.resends.outputs)

    def _claim_copies(self, items: list[Inbound]) -> list[Inbound]:
        """The messages of `items` to process: a copy of a message whose outputs are sent
        again waits with it instead (its readings are in the core already: it would only be
        dropped as a duplicate, and acked before those outputs are confirmed). So does a
        message the source says it sent again (NATS ack wait) while the one it copies is
        still held; a message equal to a held one is otherwise processed as before (an MQTT
        source never says it sent one again)."""
        before = len(items)
        if self.resends:
            items = claim(items, self.resends.waiting())
        if self._held and any(i.redelivered for i in items):
            again = claim([i for i in items if i.redelivered], [h.items for h in self._held])
            kept = {id(i) for i in again}
            items = [i for i in items if not i.redelivered or id(i) in kept]
        claimed = before - len(items)
        if claimed:
            self.metrics.messages.inc(claimed)
            self._rate_count += claimed
            self.reject_log.info(
                "output_wait",
                "%d messages came again while their alerts or dead letters are unconfirmed: "
                "they wait for those",
                claimed,
            )
        return items

    def _alert(self, result: BatchResult) -> list[Delivery]:
        """Send the batch's events to every sink; returns the publishes to confirm."""
        m = self.metrics
        if self.series_labels:
            result.events[:] = [self._labelled(e) for e in result.events]
        active = m.active_anomalies
        for event in result.events:
            m.alert_events.labels(event.state).inc()
            if event.state == "firing":
                active.fire(event)
            else:
                active.resolve(event)
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
            deliveries.extend(sink.take_deliveries())
        return deliveries

    def _learn_labels(self, items: list[Inbound]) -> None:
        """Remember the labels of the series of labelled messages, for their alerts."""
        known = self.series_labels
        for item in items:
            labels = item.labels
            for r in item.readings:
                key = f"{r.device}/{r.metric}"
                if known.get(key) is labels:
                    continue  # the usual case: one labels object per topic (decoder cache)
                known.pop(key, None)  # re-inserted last: the bound forgets the oldest
                if len(known) >= self.max_labelled_series:
                    del known[next(iter(known))]
                known[key] = labels  # type: ignore[assignment]

    def _labelled(self, event: AlertEvent) -> AlertEvent:
        labels = self.series_labels.get(f"{event.device}/{event.metric}")
        return replace(event, labels={**labels, **event.labels}) if labels else event

    def _suppressed(self, result: BatchResult) -> None:
        """Alerts the rules kept back: counted by reason, logged (rate-limited)."""
        for reason, count in Counter(s.reason for s in result.suppressed).items():
            self.metrics.alerts_suppressed.labels(reason).inc(count)
        for s in result.suppressed:
            e = s.event
            self.reject_log.info(
                f"suppressed {s.reason}",
                "alert suppressed (%s) %s/%s at ts %s, score %.2f",
                s.reason,
                e.device,
                e.metric,
                e.ts,
                e.score,
            )

    def _poll_rules(self) -> None:
        """A reload must not end detection: a failure keeps the rules in force."""
        try:
            self.rules.poll()  # type: ignore[union-attr]
        except Exception:
            log.exception("rules reload failed; keeping the rules in force")

    def _reject(self, rejections: list[Rejection], labelled: list[Inbound]) -> None:
        for reason, count in Counter(r.reason for r in rejections).items():
            self._rejected(reason).inc(count)
        labels_of = {id(r): item.labels for item in labelled for r in item.rejections}
        for rej in rejections:
            self.reject_log.warning(
                rej.reason, "rejected (%s) on %r: %s", rej.reason, rej.topic, rej.detail
            )
            if rej.reason not in NOT_DEAD_LETTERED:
                labels = labels_of.get(id(rej)) if labels_of else None
                self._send_dead(rej.reason, rej.detail, rej.topic, rej.payload, labels)

    def _dropped(self, items: list[Inbound], result: BatchResult) -> None:
        topic_of = {id(r): item.topic for item in items for r in item.readings}
        labels_of = {id(r): item.labels for item in items if item.labels for r in item.readings}
        for reason, count in Counter(d.reason for d in result.dropped).items():
            self._rejected(reason).inc(count)
        for d in result.dropped:
            r = d.reading
            topic = topic_of.get(id(r), b"").decode("utf-8", errors="replace")
            self.reject_log.warning(
                d.reason, "dropped (%s) %s/%s at ts %s", d.reason, r.device, r.metric, r.ts
            )
            if self.deadletter is not None:
                self._count_dead(self.deadletter.send_dropped(d, topic, labels_of.get(id(r))))

    def _send_dead(
        self, reason: str, detail: str, topic: str, payload: bytes, labels: Labels | None = None
    ) -> None:
        if self.deadletter is not None:
            self._count_dead(self.deadletter.send(reason, detail, topic, payload, labels))

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
            self._evict()
            trim = True
        active = self.core.active_series
        if trim or active >= self._trimmed_at * 1.1 + 1000:
            # Growing the series storage copies every per-series array; give the old
            # copies (and a burst's decoded messages) back rather than keep them.
            self._trimmed_at = active
            release_free_memory()

    def _evict(self) -> None:
        """Sweep out idle series and send the resolved events of the alerts still open on
        them like any others (sinks, counters, the open-episode gauges). No message raised
        them, so no ack waits for their publishes; but they are held like a batch's, so no
        checkpoint is saved before the broker has them (`_held`): one without the series
        is the end of the only record that their alerts were open."""
        try:
            evicted = self.core.evict_idle(self.clock())
        except Exception as exc:  # as for `_detect`: never kill the detection thread
            self.reject_log.log(logging.ERROR, CORE_ERROR, "evicting idle series failed: %r", exc)
            return
        if evicted.series:
            log.info("evicted %d idle series", evicted.series)
        if not evicted.events:
            return
        deliveries = self._alert(BatchResult([], list(evicted.events), []))
        if deliveries:
            deadline = time.monotonic() + self.confirm_timeout_s
            self._held.append(_Held([], deliveries, [], deadline))


def _merge(into: BatchResult, part: BatchResult) -> None:
    into.scored.extend(part.scored)
    into.events.extend(part.events)
    into.dropped.extend(part.dropped)
    into.warming += part.warming
    into.model_batch += part.model_batch
    into.inference_s += part.inference_s


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
    """The worker's outputs through `publisher` (the MQTT connection, or the NATS one, which
    turns topics into subjects): alert sink, dead-letter publisher, optional score stream."""
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
