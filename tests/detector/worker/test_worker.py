"""The worker loop without a broker: counting, dead letters, alerts, acks, the ingest queue."""

from __future__ import annotations

import json
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from detector.engine.core import DetectionCore
from detector.engine.detection_config import DetectionConfig
from detector.engine.events import AlertEvent, BatchResult, Eviction, Scored
from detector.engine.readings import Reading
from detector.worker.alerts import MqttAlertSink, ScoreStream
from detector.worker.deadletter import DeadLetterPublisher
from detector.worker.ingest import Inbound, IngestQueue, Intake
from detector.worker.loop import EVICT_EVERY_S, Worker, evict_interval
from detector.worker.metrics import WorkerMetrics
from detector.worker.payloads import PayloadDecoder
from tests.detector.core_fixtures import LastValueForecaster, make_artifact
from tests.detector.scripted_delivery import ScriptedDelivery

T0 = 1_700_000_000.0


class FakeBroker:
    """Publisher and acker in one: records publishes and acks."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict, int]] = []
        self.deliveries: list[ScriptedDelivery] = []
        self.acked: list[int] = []
        self.generation = 1
        self.refuse = False
        self.confirm = True  # publishes are confirmed at once unless a test says otherwise

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False):
        if self.refuse:
            return None
        self.published.append((topic, json.loads(payload), qos))
        d = ScriptedDelivery(confirmed=self.confirm)
        self.deliveries.append(d)
        return d

    def ack_many(self, acks: list[tuple[int, int, int]]) -> int:  # the MQTT source's tokens
        current = [mid for mid, _, generation in acks if generation == self.generation]
        self.acked.extend(current)
        return len(current)

    def on(self, prefix: str) -> list[dict]:
        return [p for t, p, _ in self.published if t.startswith(prefix)]


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


class ScriptedCore:
    """Scores every reading; a value above 10 is anomalous and fires an event (the worker's
    tests should not depend on how the real core scores)."""

    active_series = 1
    warming_series = 0

    def process(self, readings, now=None) -> BatchResult:
        result = BatchResult(scored=[], events=[], dropped=[])
        for r in readings:
            bad = r.value > 10
            result.scored.append(Scored(r, 1.0, 0.0, 2.0, 9.0 if bad else 0.1, bad))
            if bad:
                result.events.append(
                    AlertEvent(
                        f"{r.key}@{r.ts}",
                        "firing",
                        r.device,
                        r.metric,
                        r.ts,
                        r.value,
                        1.0,
                        0.0,
                        2.0,
                        9.0,
                        4.0,
                    )
                )
        return result

    def evict_idle(self, now: float) -> Eviction:
        return Eviction(0, [])


def make_worker(
    broker: FakeBroker, registry: CollectorRegistry, real_core: bool = False, **kwargs
) -> Worker:
    core = (
        DetectionCore(
            make_artifact(window_len=3, global_error=(0.0, 0.1)),
            LastValueForecaster(),
            DetectionConfig(),
        )
        if real_core
        else ScriptedCore()
    )
    sizes = {"queue_size": 1000, "max_batch": 1000}
    sizes.update({k: kwargs.pop(k) for k in list(kwargs) if k in sizes})
    intake = Intake(PayloadDecoder(clock=lambda: T0 + 10_000), **sizes)
    return Worker(
        core,
        WorkerMetrics(registry),
        intake,
        sinks=[MqttAlertSink(broker, model_version="m1", worker_id="w1")],
        deadletter=DeadLetterPublisher(broker, worker_id="w1"),
        **{
            "acker": broker,
            "max_batch": sizes["max_batch"],
            "linger_s": 0.0,
            "linger_above_msgs_per_s": 1e9,
            **kwargs,
        },
    )


def feed(worker: Worker, messages: list[tuple[str, bytes]], first_mid: int = 1) -> None:
    """Decode and process `messages` as one batch, like the two threads would."""
    for mid, (topic, payload) in enumerate(messages, start=first_mid):
        worker.intake.mqtt_message(topic.encode(), payload, mid, 1, 1)
    worker.process(worker.queue.drain(10_000, 0.0))


def reading(i: int, value: float, topic: str = "sensors/d1/temp") -> tuple[str, bytes]:
    return topic, json.dumps({"ts": T0 + i, "value": value}).encode()


def test_counts_add_up_and_bad_input_goes_to_dead_letters(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    w = make_worker(broker, registry, real_core=True)
    feed(
        w,
        [
            reading(1, 1.0),
            reading(2, 1.0),
            ("sensors/d1/temp", b"{bad"),
            reading(2, 1.0),  # duplicate
            ("sensors/d1", json.dumps([{"ts": T0 + 5, "metric": "a", "value": 1}, 7]).encode()),
        ],
    )
    get = registry.get_sample_value
    assert get("iotad_messages_total") == 5
    assert get("iotad_readings_total") == 6
    assert get("iotad_readings_accepted_total") == 3
    assert get("iotad_readings_rejected_total", {"reason": "malformed_json"}) == 1
    assert get("iotad_readings_rejected_total", {"reason": "duplicate"}) == 1
    assert get("iotad_readings_rejected_total", {"reason": "not_an_object"}) == 1
    assert get("iotad_deadletter_total") == 3
    reasons = sorted(d["reason"] for d in broker.on("iotad/deadletter"))
    assert reasons == ["duplicate", "malformed_json", "not_an_object"]
    dup = next(d for d in broker.on("iotad/deadletter") if d["reason"] == "duplicate")
    assert dup["topic"] == "sensors/d1/temp" and dup["worker"] == "w1"
    assert sorted(broker.acked) == [1, 2, 3, 4, 5]  # every message, good or bad


def test_alert_acks_wait_for_the_broker_to_confirm_the_alert(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [reading(i, 1.0) for i in range(6)], first_mid=1)
    assert len(broker.acked) == 6
    feed(w, [reading(6, 50.0)], first_mid=7)  # a spike: fires
    alerts = broker.on("alerts/")
    assert [a["state"] for a in alerts] == ["firing"]
    assert alerts[0]["model"] == "m1" and alerts[0]["worker"] == "w1"
    assert 7 not in broker.acked  # held until the broker has the alert
    w.release_held()
    assert 7 not in broker.acked
    broker.deliveries[-1].confirmed = True
    w.release_held()
    assert 7 in broker.acked
    assert registry.get_sample_value("iotad_alert_events_total", {"state": "firing"}) == 1


def test_only_the_message_that_raised_the_alert_waits(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [reading(1, 1.0), reading(2, 50.0), reading(1, 1.0, "sensors/d2/temp")])
    assert sorted(broker.acked) == [1, 3]  # message 2 raised the alert
    broker.deliveries[-1].confirmed = True
    w.release_held()
    assert sorted(broker.acked) == [1, 2, 3]


def test_unconfirmed_alert_releases_acks_after_the_timeout(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry, confirm_timeout_s=0.0)
    feed(w, [reading(i, 1.0) for i in range(6)])
    feed(w, [reading(6, 50.0)], first_mid=7)
    w.release_held()
    assert 7 in broker.acked
    assert (
        registry.get_sample_value("iotad_publish_failed_total", {"kind": "alert_unconfirmed"}) == 1
    )


def test_a_lost_alert_is_sent_again_and_its_message_acked_once_confirmed(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [reading(i, 1.0) for i in range(6)])
    feed(w, [reading(6, 50.0), reading(7, 1.0, "sensors/d2/temp")], first_mid=7)
    assert 8 in broker.acked and 7 not in broker.acked
    alert = broker.deliveries[-1]
    alert.given_up = True  # the source gave up on it
    w.release_held()
    # Sent again (the same delivery: the same message id), the message still unacked.
    assert alert.sent_again == 1 and not alert.lost()
    assert 7 not in broker.acked and w.acks_held
    get = registry.get_sample_value
    assert get("iotad_publish_failed_total", {"kind": "alert_unconfirmed"}) == 1
    assert get("iotad_outputs_resending") == 1
    assert get("iotad_outputs_resent_total") == 1
    assert len(broker.on("alerts/")) == 1  # nothing new published: the delivery was resent
    alert.confirmed = True
    w.release_held()
    assert 7 in broker.acked and not w.acks_held
    assert get("iotad_outputs_resending") == 0


def test_a_copy_of_a_message_whose_alert_is_sent_again_waits_with_it(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    """The source sends the message again: it is not processed again (the real core would
    drop its reading as a duplicate, dead-letter it and ack it before the alert is
    confirmed; the scripted one would alert again), it waits."""
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [reading(i, 1.0) for i in range(6)])
    feed(w, [reading(6, 50.0)], first_mid=7)
    published = len(broker.published)
    alert = broker.deliveries[-1]
    assert broker.on("alerts/") and 7 not in broker.acked
    alert.given_up = True
    w.release_held()
    for mid in (70, 71):  # the ack wait passes twice
        w.intake.decoded(
            b"sensors/d1/temp",
            (mid, 1, 1),
            [Reading("d1", "temp", T0 + 6, 50.0)],
            [],
            redelivered=True,
        )
        w.process(w.queue.drain(100, 0.0))
    assert len(broker.published) == published  # no new alert, no dead letter
    assert not {7, 70, 71} & set(broker.acked)
    alert.confirmed = True
    w.release_held()
    assert {7, 71} <= set(broker.acked) and 70 not in broker.acked  # 71 replaced 70


def test_a_copy_that_comes_while_the_alert_is_still_retried_waits_too(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [reading(i, 1.0) for i in range(6)])
    feed(w, [reading(6, 50.0)], first_mid=7)
    alert = broker.deliveries[-1]
    # Not given up yet (NATS retries for output_retry_s), but the ack wait is over.
    w.intake.decoded(
        b"sensors/d1/temp",
        (70, 1, 1),
        [Reading("d1", "temp", T0 + 6, 50.0)],
        [],
        redelivered=True,
    )
    w.process(w.queue.drain(100, 0.0))
    assert len(broker.on("alerts/")) == 1 and not {7, 70} & set(broker.acked)
    alert.confirmed = True
    w.release_held()
    assert {7, 70} <= set(broker.acked)


def test_an_equal_message_the_source_did_not_send_again_is_processed(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    """While the alert is only held (MQTT's case: never lost), an equal message is a new
    one: processed as it always was."""
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [reading(i, 1.0) for i in range(6)])
    feed(w, [reading(6, 50.0)], first_mid=7)
    feed(w, [reading(6, 50.0)], first_mid=8)
    assert len(broker.on("alerts/")) == 2


def test_past_the_bound_a_lost_alert_is_dropped_and_counted(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry)
    w.resends.max_outputs = 0
    feed(w, [reading(i, 1.0) for i in range(6)])
    feed(w, [reading(6, 50.0)], first_mid=7)
    broker.deliveries[-1].given_up = True
    w.release_held()
    assert broker.deliveries[-1].sent_again == 0
    assert 7 not in broker.acked and not w.acks_held  # comes again, as before
    assert registry.get_sample_value("iotad_outputs_dropped_total") == 1


def test_a_dead_letter_holds_its_message_until_confirmed(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [("sensors/d/m", b"oops"), reading(1, 1.0)])
    assert broker.acked == [2]
    (letter,) = broker.deliveries
    letter.confirmed = True
    w.release_held()
    assert broker.acked == [2, 1]


def test_a_lost_dead_letter_is_sent_again_and_a_copy_of_its_message_waits(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    broker.confirm = False
    w = make_worker(broker, registry)
    feed(w, [("sensors/d/m", b"oops")])
    (letter,) = broker.deliveries
    letter.given_up = True
    w.release_held()
    assert broker.acked == [] and letter.sent_again == 1
    assert registry.get_sample_value("iotad_publish_failed_total", {"kind": "deadletter"}) == 1
    # Any copy of it waits (after a NATS rewind it is not even marked as sent again).
    feed(w, [("sensors/d/m", b"oops")], first_mid=2)
    assert len(broker.published) == 1 and broker.acked == []
    letter.confirmed = True
    w.release_held()
    assert sorted(broker.acked) == [1, 2]
    assert (
        registry.get_sample_value("iotad_readings_rejected_total", {"reason": "malformed_json"})
        == 1
    )


def test_acks_of_an_old_connection_are_not_sent(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    w = make_worker(broker, registry)
    w.intake.mqtt_message(b"sensors/d/m", b"1", 1, 1, 1)
    broker.generation = 2  # reconnected meanwhile: the broker will redeliver message 1
    w.process(w.queue.drain(100, 0.0))
    assert broker.acked == []


def test_qos0_messages_are_not_acked(broker: FakeBroker, registry: CollectorRegistry) -> None:
    w = make_worker(broker, registry)
    w.intake.mqtt_message(b"sensors/d/m", b"1", 0, 0, 1)
    w.process(w.queue.drain(100, 0.0))
    assert broker.acked == []
    assert registry.get_sample_value("iotad_readings_accepted_total") == 1


def test_refused_dead_letters_are_counted(broker: FakeBroker, registry: CollectorRegistry) -> None:
    w = make_worker(broker, registry)
    broker.refuse = True
    feed(w, [("sensors/d/m", b"oops")])
    assert registry.get_sample_value("iotad_deadletter_total") == 0
    assert registry.get_sample_value("iotad_publish_failed_total", {"kind": "deadletter"}) == 1
    assert broker.acked == [1]


def test_score_stream(broker: FakeBroker, registry: CollectorRegistry) -> None:
    w = make_worker(broker, registry, scores=ScoreStream(broker))
    feed(w, [reading(i, 1.0) for i in range(5)])
    scores = [(t, p, q) for t, p, q in broker.published if t.startswith("scores/")]
    assert len(scores) == 5
    topic, body, qos = scores[0]
    assert topic == "scores/d1/temp" and qos == 0
    assert set(body) == {"ts", "value", "expected", "lower", "upper", "score", "anomaly"}


def test_detection_thread_runs_and_stops(broker: FakeBroker, registry: CollectorRegistry) -> None:
    w = make_worker(broker, registry, real_core=True)
    w.start()
    try:
        for i in range(20):
            w.intake.mqtt_message(b"sensors/d/m", str(i).encode(), i + 1, 1, 1)
        deadline = time.monotonic() + 5
        while len(broker.acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(broker.acked) == list(range(1, 21))
    finally:
        w.stop(timeout_s=5)
    assert not w.alive and w.failed is None


# -- the ingest queue -------------------------------------------------------------------------


def item(mid: int, n: int = 1) -> Inbound:
    return Inbound(mid, b"t", [None] * n, [])  # type: ignore[list-item]


def test_drain_takes_everything_up_to_max_readings() -> None:
    q = IngestQueue(100)
    for mid in range(10):
        q.put(item(mid, n=3))
    first = q.drain(max_readings=7, timeout_s=0)
    assert [i.token for i in first] == [0, 1, 2]  # stops once 7 readings are reached
    assert len(q.drain(1000, 0)) == 7
    assert q.drain(1000, 0) == []


def test_drain_blocks_for_the_first_item_only() -> None:
    q = IngestQueue(10)
    threading.Timer(0.05, lambda: q.put(item(1))).start()
    started = time.monotonic()
    got = q.drain(100, timeout_s=5)
    assert [i.token for i in got] == [1]
    assert time.monotonic() - started < 2


def test_full_queue_blocks_the_producer_until_drained() -> None:
    q = IngestQueue(2)
    q.put(item(1))
    q.put(item(2))
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(item(3)), done.set()), daemon=True).start()
    assert not done.wait(0.1)
    q.drain(100, 0)
    assert done.wait(2)


def test_a_short_queue_lingers_for_more_even_when_not_empty() -> None:
    # A fast detection thread always finds a few messages waiting: it must still linger,
    # or batches stay tiny under load (measured: batches of 12-17, half the throughput).
    q = IngestQueue(100)
    q.put(item(1))
    threading.Timer(0.01, lambda: q.put(item(2))).start()
    got = q.drain(1000, timeout_s=0, linger_s=0.5, linger_below=64)
    assert [i.token for i in got] == [1, 2]


def test_a_long_queue_does_not_linger() -> None:
    q = IngestQueue(100)
    for mid in range(3):
        q.put(item(mid))
    late = threading.Timer(0.3, lambda: q.put(item(99)))
    late.start()
    got = q.drain(1000, timeout_s=0, linger_s=1.0, linger_below=3)
    late.join()
    assert [i.token for i in got] == [0, 1, 2]


def test_queue_is_full_at_its_reading_bound_too() -> None:
    # Two gateway messages of 600 readings fill a queue of 1,000 readings, not of 100 messages.
    q = IngestQueue(100, max_readings=1000)
    q.put(item(1, n=600))
    q.put(item(2, n=600))
    assert q.readings == 1200
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(item(3)), done.set()), daemon=True).start()
    assert not done.wait(0.1)
    assert [i.token for i in q.drain(100, 0)] == [1]  # max_readings of the drain: one message
    assert done.wait(2)
    assert q.readings == 601
    q.drain(10_000, 0)
    assert q.readings == 0


def test_closed_queue_never_blocks_and_drops() -> None:
    q = IngestQueue(1)
    q.put(item(1))
    q.close()
    assert q.put(item(2)) is False
    assert q.drain(100, timeout_s=5) and q.drain(100, timeout_s=5) == []


def test_many_items_through_a_small_queue() -> None:
    q = IngestQueue(8)
    n = 20_000

    def produce() -> None:
        for mid in range(n):
            q.put(item(mid))

    t = threading.Thread(target=produce)
    t.start()
    got: list[int] = []
    while len(got) < n:
        got.extend(i.token for i in q.drain(5, 1.0))
    t.join()
    assert got == list(range(n))


def test_a_failing_core_drops_the_batch_and_keeps_going(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    w = make_worker(broker, registry)

    def boom(readings, now=None):
        raise ValueError("bug")

    w.core.process = boom  # type: ignore[method-assign]
    feed(w, [reading(1, 1.0), reading(2, 1.0)])
    assert registry.get_sample_value("iotad_readings_rejected_total", {"reason": "core_error"}) == 2
    assert registry.get_sample_value("iotad_readings_accepted_total") == 0
    assert sorted(broker.acked) == [1, 2]
    assert [d["reason"] for d in broker.on("iotad/deadletter")] == ["core_error", "core_error"]


def test_eviction_sweeps_follow_the_idle_time() -> None:
    assert evict_interval(86_400) == EVICT_EVERY_S  # the default day: once a minute
    assert evict_interval(60) == 15  # a minute: within a quarter of it
    assert evict_interval(0.1) == 0.25  # never a busy loop


def test_tokens_are_opaque_to_the_worker(broker: FakeBroker, registry: CollectorRegistry) -> None:
    """Any source's tokens come back to it as they were (NATS: reply subjects); messages
    without one (MQTT QoS 0) are not acked."""

    class Source:
        def __init__(self) -> None:
            self.acked: list[object] = []

        def ack_many(self, tokens: list[object]) -> int:
            self.acked.extend(tokens)
            return len(tokens)

    source = Source()
    w = make_worker(broker, registry, acker=source)
    w.intake.message(b"sensors/d/m", b"1", "$JS.ACK.S.c.1.1.1.1.0")
    w.intake.message(b"sensors/d/m", b"oops", ("any", "thing"))
    w.intake.message(b"sensors/d/m", b"2", None)
    w.process(w.queue.drain(100, 0.0))
    assert source.acked == ["$JS.ACK.S.c.1.1.1.1.0", ("any", "thing")]
    assert registry.get_sample_value("iotad_readings_total") == 3


def test_a_death_in_a_batch_ends_the_series_between_the_readings_around_it(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    from detector.engine.readings import Reading
    from detector.worker.sparkplug import Ended

    worker = make_worker(broker, registry, real_core=True)
    before = [Reading("gw1", "temp", T0 + i, 20.0 + i % 2) for i in range(10)]
    after = [Reading("gw1", "temp", T0 + 100 + i, 80.0) for i in range(2)]
    items = [
        Inbound((1, 1, 1), b"spBv1.0/g/NDATA/gw1", before, []),
        Inbound((2, 1, 1), b"spBv1.0/g/NDEATH/gw1", [], [], [Ended("gw1", T0 + 50)]),
        Inbound((3, 1, 1), b"spBv1.0/g/NDATA/gw1", after, []),
    ]
    result = worker.process(items)
    core = worker.core
    assert isinstance(core, DetectionCore)
    slot = core.store.slot("gw1/temp")
    assert slot is not None
    # only the two readings after the DEATH are in the series' new segment
    assert int(core.store.count[slot]) == 2
    assert [s.reading.ts for s in result.scored] == [T0 + i for i in range(3, 10)]
    assert sorted(broker.acked) == [1, 2, 3]
    assert registry.get_sample_value("iotad_readings_accepted_total") == 12


def test_topic_labels_travel_into_alerts_and_dead_letters(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    worker = make_worker(broker, registry)
    worker.intake.decoder = PayloadDecoder(
        ["plant/{site}/{line}/{device}/{metric}", "sensors/{device}/{metric}"],
        clock=lambda: T0 + 10_000,
    )
    feed(
        worker,
        [
            reading(0, 50.0, "plant/north/L2/press-4/temp"),  # fires (ScriptedCore: > 10)
            reading(1, 60.0, "sensors/d1/temp"),  # fires, no labels
            ("plant/north/L2/press-4/temp", b'{"value": "hot"}'),  # dead letter
        ],
    )
    alerts = {(a["device"], a["metric"]): a for a in broker.on("alerts/")}
    assert alerts[("press-4", "temp")]["labels"] == {"site": "north", "line": "L2"}
    assert alerts[("d1", "temp")]["labels"] == {}
    (letter,) = broker.on("iotad/deadletter")
    assert letter["reason"] == "not_a_number"
    assert letter["labels"] == {"site": "north", "line": "L2"}
    # the series keeps its labels for alerts raised later (silence, a later batch)
    feed(worker, [reading(2, 70.0, "plant/south/L9/press-4/temp")], first_mid=10)
    later = [a for a in broker.on("alerts/") if a["ts"] == T0 + 2]
    assert later[0]["labels"] == {"site": "south", "line": "L9"}


def test_labelled_series_are_bounded(broker: FakeBroker, registry: CollectorRegistry) -> None:
    worker = make_worker(broker, registry, max_labelled_series=2)
    worker.intake.decoder = PayloadDecoder(
        ["plant/{site}/{device}/{metric}"], clock=lambda: T0 + 10_000
    )
    feed(worker, [reading(i, 1.0, f"plant/s{i}/d{i}/temp") for i in range(3)])
    assert list(worker.series_labels) == ["d1/temp", "d2/temp"]


def test_an_evicted_series_resolves_its_alert_everywhere(
    broker: FakeBroker, registry: CollectorRegistry
) -> None:
    """The eviction sweep's resolved events go out like a batch's: to the sinks, in the
    counters and the open-episode gauges; no checkpoint is due while they are unconfirmed."""
    core = DetectionCore(
        make_artifact(window_len=3, global_error=(0.0, 0.1)),
        LastValueForecaster(),
        DetectionConfig(learn_readings=0, idle_evict_s=60.0),
    )
    clock = [T0]
    w = make_worker(broker, registry, clock=lambda: clock[0], evict_every_s=0.0)
    w.core = core
    feed(w, [reading(i, 1.0 + 0.01 * (i % 2)) for i in range(10)] + [reading(10, 50.0)])
    (fired,) = broker.on("alerts/")
    assert fired["state"] == "firing" and fired["reason"] is None
    get = registry.get_sample_value
    open_ = {"device": "d1", "metric": "temp", "signal": fired["signal"]}
    assert get("iotad_anomaly_active", open_) == 1
    broker.confirm = False
    w._housekeeping()  # the clock has not moved: nothing is idle yet
    assert len(broker.on("alerts/")) == 1 and core.active_series == 1
    clock[0] = time.time() + 61.0  # the core stamps what it is given with the wall clock
    w._next_housekeeping = 0.0
    w._housekeeping()
    assert core.active_series == 0
    resolved = broker.on("alerts/")[1:]
    assert [(a["id"], a["state"], a["reason"], a["ts"]) for a in resolved] == [
        (f"{fired['id']}-resolved", "resolved", "evicted", clock[0])
    ]
    assert get("iotad_alert_events_total", {"state": "resolved"}) == 1
    assert get("iotad_anomaly_active", open_) is None
    assert w.acks_held  # a checkpoint waits for the broker to have the resolved alert
    broker.deliveries[-1].confirmed = True
    w.release_held()
    assert not w.acks_held
