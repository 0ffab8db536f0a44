"""Broker restarts mid-stream: nothing is lost, nothing is scored twice, alerts get through.

The broker here keeps its state on disk (``persistence true``), as a production mosquitto
does, so the worker's persistent session and the messages queued or in flight for it survive
the restart. The helpers at the top are shared by the other ``test_reliability_*`` modules.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    TINY_START_TS,
    TINY_STEP_S,
    Mosquitto,
    WorkerProcess,
    publish_all,
    tiny_value,
)

pytestmark = pytest.mark.integration

SESSION_EXPIRY_S = 60  # test sessions must not outlive the test by much (DESIGN: pitfalls)


class PersistentMosquitto(Mosquitto):
    """A test mosquitto that saves sessions and queued messages to disk (and every second)."""

    BASE_CONF = tuple(line for line in Mosquitto.BASE_CONF if not line.startswith("persistence"))

    def write_config(self) -> None:
        store = self.workdir / "store"
        store.mkdir(exist_ok=True)
        extra = ["persistence true", f"persistence_location {store}/", "autosave_interval 1"]
        self.conf = [c for c in self.conf if c not in extra] + extra
        super().write_config()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PersistentMosquitto]:
    b = PersistentMosquitto(tmp_path / "broker", conf=["max_queued_messages 200000"])
    b.start()
    yield b
    b.stop()


def numbered(
    n: int, keys: Sequence[str] = ("line1/temperature",), first_step: int = 1500, seed: int = 7
) -> list[tuple[str, bytes]]:
    """`n` steps of the tiny model's series, one message per reading, in step order."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(n):
        i = first_step + step
        for key in keys:
            value = round(tiny_value(key, i) + float(rng.normal(0.0, 0.1)), 6)
            ts = TINY_START_TS + i * TINY_STEP_S
            out.append((f"sensors/{key}", json.dumps({"ts": ts, "value": value}).encode()))
    return out


def series_ts(messages: Sequence[tuple[str, bytes]]) -> set[tuple[str, str, float]]:
    """``(device, metric, ts)`` of every message (topic form ``sensors/{device}/{metric}``)."""
    out = set()
    for topic, payload in messages:
        _, device, metric = topic.split("/")
        out.add((device, metric, float(json.loads(payload)["ts"])))
    return out


def rejected(worker: WorkerProcess) -> dict[str, float]:
    """``iotad_readings_rejected_total`` by reason (non-zero only)."""
    return {
        dict(labels)["reason"]: v
        for (name, labels), v in worker.metrics().items()
        if name == "iotad_readings_rejected_total" and v
    }


class PacedPublisher(threading.Thread):
    """Publishes `messages` at QoS 1, `rate` per second, straight through broker outages.

    paho keeps QoS 1 messages published while disconnected and resends those in flight after
    reconnecting; PUBACKs are counted per message id, and at most `window` may be
    outstanding (paho stalls past 65,535, see DESIGN).
    """

    def __init__(
        self, port: int, messages: Sequence[tuple[str, bytes]], rate: float, window: int = 500
    ) -> None:
        super().__init__(daemon=True)
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages = list(messages)
        self.rate = rate
        self.window = window
        self.sent = 0
        self._pending: set[int] = set()
        self._early: set[int] = set()  # acked before publish() returned its id
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pub-{id(self)}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, client: object, userdata: object, mid: int, *rest: object) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._early.add(mid)

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(self) -> None:
        started = time.monotonic()
        for n, (topic, payload) in enumerate(self.messages):
            ahead = started + n / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            while self.outstanding >= self.window:
                time.sleep(0.005)
            # Not under our lock: paho calls on_publish holding its own message lock.
            info = self.client.publish(topic, payload, qos=1)
            with self._lock:
                if info.mid in self._early:  # the PUBACK came before publish() returned
                    self._early.discard(info.mid)
                else:
                    self._pending.add(info.mid)
            self.sent = n + 1

    def wait_acked(self, timeout_s: float = 60.0) -> None:
        """Until every message was published and acknowledged by the broker."""
        self.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.outstanding and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.is_alive() and self.outstanding == 0, f"{self.outstanding} unacked"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class PersistentCollector:
    """A subscriber with a persistent session (QoS 1): nothing published while it is away,
    or while the broker restarts, is missed."""

    def __init__(self, port: int, topics: Sequence[str], client_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("collector could not subscribe")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))  # type: ignore[attr-defined]

    def json(self, prefix: str = "") -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p in self.messages if t.startswith(prefix)]

    def wait_for(self, n: int, prefix: str = "", timeout_s: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(got := self.json(prefix)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {n} messages on {prefix!r}")
            time.sleep(0.02)
        return got

    def close(self) -> None:
        # Leave with session expiry 0: nothing stays behind on the broker.
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


# -- the tests ------------------------------------------------------------------------------


def test_broker_restart_mid_stream_loses_nothing_and_scores_nothing_twice(
    broker: PersistentMosquitto, start_worker, tmp_path: Path
) -> None:
    keys = ("line1/temperature", "line1/vibration", "line2/temperature")
    stream = numbered(300, keys)  # 900 messages at 300/s: about 3 s
    dead = PersistentCollector(broker.port, ["iotad/deadletter"], "dead-watch")
    worker = start_worker(
        {"IOTAD_MQTT__RECONNECT_MAX_S": "1"}, worker_id="w-broker-restart", broker=broker
    )
    pub = PacedPublisher(broker.port, stream, rate=300)
    pub.start()
    try:
        wait_until(lambda: pub.sent >= len(stream) // 3, what="a third published")
        # The worker is mid-batch when the broker goes: it has messages it has not yet
        # acknowledged, which the broker must redeliver after the restart.
        worker.signal(signal.SIGSTOP)
        time.sleep(0.3)
        broker.stop()
        worker.signal(signal.SIGCONT)
        worker.wait_metric("iotad_mqtt_connected", lambda v: v == 0, timeout_s=10)
        down = [worker.get("/readyz") for _ in range(3)]
        assert all(code == 503 for code, _ in down), down
        assert "not connected" in down[0][1]
        assert worker.get("/healthz")[0] == 200  # alive, just not ready
        time.sleep(1.0)  # the publisher keeps publishing into paho's queue meanwhile
    finally:
        broker.start()
    worker.wait_ready(timeout_s=15)
    pub.wait_acked()
    pub.close()

    published = len(stream)
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= published, timeout_s=30)
    worker.settle(broker.port)  # every late redelivery is counted too
    m = worker.metrics()
    accepted = m[("iotad_readings_accepted_total", ())]
    reasons = rejected(worker)
    assert reasons.pop("bad_topic") == 2  # the settle barriers
    total = m[("iotad_readings_total", ())]
    # Every published reading was taken exactly once; every extra delivery was recognised.
    assert accepted == published
    assert total == accepted + sum(reasons.values()) + 2
    assert set(reasons) <= {"duplicate", "out_of_order"}, reasons
    assert sum(reasons.values()) >= 1, "the frozen worker's messages were not redelivered"
    assert m[("iotad_readings_scored_total", ())] + m[("iotad_readings_warming_total", ())] == (
        published
    )
    assert m[("iotad_mqtt_reconnects_total", ())] >= 1
    # The dropped ones are redeliveries of readings already taken, not new readings.
    letters = dead.wait_for(int(sum(reasons.values())) + 2, "iotad/deadletter")
    dropped = {
        (d["device"], d["metric"], d["ts"])
        for d in (json.loads(x["payload"]) for x in letters if x["reason"] != "bad_topic")
    }
    assert len(letters) == int(sum(reasons.values())) + 2
    assert dropped <= series_ts(stream)
    dead.close()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_alert_raised_while_the_broker_is_down_is_delivered_after_it_returns(
    broker: PersistentMosquitto, start_worker, tiny_artifact: Path
) -> None:
    from tests.integration.test_worker_pipeline import expected_events

    stream = numbered(66)
    spike = 60
    topic, body = stream[spike]
    doc = json.loads(body)
    doc["value"] += 12.0
    stream[spike] = (topic, json.dumps(doc).encode())
    expected = [e for e in expected_events(tiny_artifact, stream) if e.state == "firing"]
    assert [e.ts for e in expected] == [doc["ts"]], "the spike must raise exactly one alert"

    alerts = PersistentCollector(broker.port, ["alerts/#"], "alert-watch")
    worker = start_worker(
        {"IOTAD_MQTT__RECONNECT_MAX_S": "1"}, worker_id="w-alert-outage", broker=broker
    )
    publish_all(broker.port, stream[:spike])
    worker.wait_metric("iotad_readings_accepted_total", lambda v: v >= spike)
    # The spike reaches the worker while it is frozen, then the broker goes away: the alert
    # is raised with no connection, so paho must keep it and send it on reconnect.
    worker.signal(signal.SIGSTOP)
    publish_all(broker.port, stream[spike:])
    time.sleep(0.3)
    broker.stop()
    worker.signal(signal.SIGCONT)
    worker.wait_metric("iotad_alert_events_total", lambda v: v == 1, state="firing")
    assert worker.sample("iotad_mqtt_connected") == 0
    assert alerts.json() == []
    broker.start()

    (got,) = alerts.wait_for(1, "alerts/", timeout_s=20)
    assert (got["id"], got["state"], got["ts"]) == (expected[0].id, "firing", doc["ts"])
    worker.wait_metric("iotad_readings_total", lambda v: v > len(stream))  # redeliveries
    worker.settle(broker.port)  # every redelivery handled, its alerts (if any) published
    # The redelivered spike was recognised: no second alert, no second acceptance.
    assert worker.sample("iotad_alert_events_total", state="firing") == 1
    assert len(alerts.json("alerts/")) == 1
    assert worker.sample("iotad_readings_accepted_total") == len(stream)
    reasons = rejected(worker)
    assert reasons.pop("bad_topic") == 2  # the settle barriers
    assert set(reasons) <= {"duplicate", "out_of_order"}, reasons
    assert worker.sample("iotad_readings_total") == len(stream) + sum(reasons.values()) + 2
    assert worker.sample("iotad_publish_failed_total", kind="alert_unconfirmed") == 0
    alerts.close()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
