"""The compose stack's broker config, run for real: deploy/mosquitto/* on a local mosquitto.

The secrets come from deploy/init-secrets.sh and the password file from
deploy/mosquitto/make-passwd.sh, exactly as the compose stack makes them; only the paths and
the port of mosquitto.conf are rewritten for this machine.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from tests.deploy.services import MOSQUITTO, MOSQUITTO_PASSWD, DeployBroker

pytestmark = pytest.mark.integration


class Client:
    """A paho client that records what it receives."""

    def __init__(self, broker: DeployBroker, user: str | None, password: str | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connack = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, msg: self.received.append((msg.topic, msg.payload))
        self.c.connect("127.0.0.1", broker.port)
        # Drive the handshake by hand: a background loop of a refused client sits in paho's
        # reconnect delay, and stopping it costs a second.
        deadline = time.monotonic() + 5
        while not self.connack.is_set():
            assert time.monotonic() < deadline, "no CONNACK"
            self.c.loop(0.05)
        if self.ok:
            self.c.loop_start()

    def _on_connect(
        self, _c: object, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object
    ) -> None:
        self.reason = reason
        self.connack.set()

    @property
    def ok(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def subscribe(self, *topics: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *_a: done.set()
        self.c.subscribe([(t, 1) for t in topics])
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes = b"1") -> None:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(5)

    def wait_for(self, topic: str, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(t == topic for t, _ in self.received):
            assert time.monotonic() < deadline, f"{topic} not received; got {self.received}"
            time.sleep(0.01)

    def topics(self) -> set[str]:
        return {t for t, _ in self.received}

    def close(self) -> None:
        self.c.disconnect()
        if self.ok:
            self.c.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployBroker]:
    if not (MOSQUITTO and MOSQUITTO_PASSWD):
        pytest.skip("mosquitto / mosquitto_passwd not found (scripts/system-deps.sh installs them)")
    b = DeployBroker(tmp_path_factory.mktemp("mosquitto"))
    yield b
    b.stop()


def test_anonymous_and_wrong_passwords_are_refused(broker: DeployBroker) -> None:
    for user, password in ((None, None), ("iotad", "wrong"), ("nobody", "x"), ("iotad", "")):
        client = Client(broker, user, password)
        assert not client.ok, (user, client.reason)
        client.close()


def test_topic_rights(broker: DeployBroker) -> None:
    iotad = Client(broker, "iotad", broker.passwords["iotad"])
    sim = Client(broker, "simulator", broker.passwords["simulator"])
    reader = Client(broker, "reader", broker.passwords["reader"])
    try:
        assert iotad.ok and sim.ok and reader.ok
        iotad.subscribe("sensors/#", "alerts/#")
        sim.subscribe("alerts/#", "sensors/#")
        reader.subscribe("sensors/#", "alerts/#", "scores/#", "iotad/#")

        # Readings: the simulator writes, only the worker reads.
        sim.publish("sensors/press-7/temp", b"21.5")
        iotad.wait_for("sensors/press-7/temp")
        # The worker writes alerts, scores and its own topics; readers read them.
        for topic in ("alerts/press-7/temp", "scores/press-7/temp", "iotad/deadletter"):
            iotad.publish(topic)
            reader.wait_for(topic)
        # Forbidden publishes are dropped by the broker. Each is followed by an allowed
        # "barrier" message: once that arrives, the forbidden one was handled before it.
        sim.publish("alerts/press-7/temp", b"forged")
        iotad.publish("sensors/forged/by-worker")
        sim.publish("sensors/barrier/x")
        iotad.publish("alerts/barrier/x")
        iotad.wait_for("sensors/barrier/x")
        reader.wait_for("alerts/barrier/x")

        assert "sensors/forged/by-worker" not in iotad.topics()
        assert not [p for t, p in reader.received if p == b"forged"]
        assert not any(t.startswith("sensors/") for t in reader.topics())  # no read right
        assert sim.received == []  # the simulator may read nothing at all
        assert not any(t.startswith("alerts/") for t in iotad.topics())  # write-only there
    finally:
        for c in (iotad, sim, reader):
            c.close()


def test_password_file_is_hashed_and_private(broker: DeployBroker) -> None:
    passwd = broker.password_file
    text = passwd.read_text()
    assert set(re.findall(r"^(\w+):", text, re.M)) == {"iotad", "simulator", "reader"}
    for password in broker.passwords.values():
        assert password not in text
    assert passwd.stat().st_mode & 0o077 == 0
