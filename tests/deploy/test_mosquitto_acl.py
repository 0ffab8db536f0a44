"""The compose stack's broker config, run for real: deploy/mosquitto/* on a local mosquitto.

The secrets come from deploy/init-secrets.sh and the password file from
deploy/mosquitto/make-passwd.sh, exactly as the compose stack makes them; only the paths and
the port of mosquitto.conf are rewritten for this machine.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest

from tests.deploy.services import MOSQUITTO, MOSQUITTO_PASSWD, DeployBroker

pytestmark = pytest.mark.integration


class Client:
    """A paho client that records what it receives."""

    def __init__(
        self,
        broker: DeployBroker,
        user: str | None,
        password: str | None = None,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connack = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if user is not None:
            self.c.username_pw_set(user, password)
        if will is not None:
            self.c.will_set(*will, qos=1)
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

    def subscribe(self, *topics: str) -> list[bool]:
        """Subscribe at QoS 1; per filter, whether the broker granted it (SUBACK)."""
        done = threading.Event()
        granted: list[bool] = []

        def on_subscribe(
            _c: object, _u: object, _mid: int, reasons: list[mqtt.ReasonCode], _p: object
        ) -> None:
            granted.extend(not r.is_failure for r in reasons)
            done.set()

        self.c.on_subscribe = on_subscribe
        self.c.subscribe([(t, 1) for t in topics])
        assert done.wait(5)
        return granted

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

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT, as a crashed edge node does: the broker
        publishes the client's will."""
        self.c.loop_stop()
        sock = self.c.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


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


def test_sparkplug_topic_rights(broker: DeployBroker) -> None:
    """Sparkplug B as a plant turns it on: an edge node connects as `simulator` (with its
    NDEATH as will), the worker reads spBv1.0/# and may write the rebirth command (NCMD) and
    nothing else there; an edge node cannot command another node."""
    group, node, device = "plant1", "gw1", "press4"
    ndeath = f"spBv1.0/{group}/NDEATH/{node}"
    iotad = Client(broker, "iotad", broker.passwords["iotad"])
    edge = Client(broker, "simulator", broker.passwords["simulator"], will=(ndeath, b"will"))
    reader = Client(broker, "reader", broker.passwords["reader"])
    try:
        assert iotad.ok and edge.ok and reader.ok
        # The filters the worker takes with IOTAD_MQTT__TOPICS=sensors/#,spBv1.0/# (and its
        # status), and an edge node's: commands to it and to its devices, hosts' STATE.
        # (mosquitto 2.0 grants any filter and checks read rights per message; what the
        # clients receive below is the real check.)
        worker_filters = ["sensors/#", "spBv1.0/#", "iotad/status/#"]
        edge_filters = [f"spBv1.0/{group}/NCMD/{node}", f"spBv1.0/{group}/DCMD/{node}/+"]
        edge_filters.append("spBv1.0/STATE/+")
        assert iotad.subscribe(*worker_filters) == [True] * len(worker_filters)
        assert edge.subscribe(*edge_filters) == [True] * len(edge_filters)
        reader.subscribe("spBv1.0/#")

        # The edge node publishes its BIRTH, DATA and DEATH; the worker reads them all.
        node_topics = [
            f"spBv1.0/{group}/{kind}/{node}" for kind in ("NBIRTH", "NDATA", "NDEATH")
        ] + [f"spBv1.0/{group}/{kind}/{node}/{device}" for kind in ("DBIRTH", "DDATA", "DDEATH")]
        for topic in node_topics:
            edge.publish(topic)
            iotad.wait_for(topic)
        # The worker's rebirth request reaches the edge node.
        ncmd = f"spBv1.0/{group}/NCMD/{node}"
        iotad.publish(ncmd, b"rebirth")
        edge.wait_for(ncmd)

        # Forbidden, each followed by allowed barrier messages (see test_topic_rights): the
        # worker posing as a node or commanding a device or the host state; the edge node
        # sending commands (to itself or another node) or a host's STATE.
        forged_by_worker = [
            *(t.replace(node, "forged-by-worker") for t in node_topics),
            f"spBv1.0/{group}/DCMD/{node}/{device}",
            "spBv1.0/STATE/forged-by-worker",
            f"spBv1.0/{group}/NCMD/{node}/extra",  # NCMD has exactly four levels
        ]
        forged_by_edge = [
            f"spBv1.0/{group}/NCMD/other-node",
            f"spBv1.0/{group}/NCMD/{node}",
            f"spBv1.0/{group}/DCMD/{node}/{device}",
            "spBv1.0/STATE/forged-by-edge",
        ]
        for topic in forged_by_worker:
            iotad.publish(topic, b"forged")
        for topic in forged_by_edge:
            edge.publish(topic, b"forged")
        iotad.publish(ncmd, b"barrier-worker")
        edge.publish(f"spBv1.0/{group}/NDATA/{node}", b"barrier-edge")
        wait_for_payload(edge, b"barrier-worker")
        wait_for_payload(iotad, b"barrier-worker")
        wait_for_payload(iotad, b"barrier-edge")

        # The worker sees its own publishes (no No Local in 3.1.1): none of its forged ones.
        assert not [t for t, p in iotad.received if p == b"forged"]
        assert not [t for t, p in edge.received if p == b"forged"]
        assert reader.received == []  # Sparkplug is no business of the output readers

        # A crashed edge node: the broker publishes its NDEATH will, and the worker gets it.
        before = sum(1 for t, _ in iotad.received if t == ndeath)
        edge.drop()
        wait_until(lambda: sum(1 for t, p in iotad.received if t == ndeath and p == b"will"))
        assert sum(1 for t, _ in iotad.received if t == ndeath) == before + 1
    finally:
        for c in (iotad, reader):
            c.close()


def wait_for_payload(client: Client, payload: bytes) -> None:
    wait_until(lambda: any(p == payload for _, p in client.received))


def wait_until(cond: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_password_file_is_hashed_and_private(broker: DeployBroker) -> None:
    passwd = broker.password_file
    text = passwd.read_text()
    assert set(re.findall(r"^(\w+):", text, re.M)) == {"iotad", "simulator", "reader"}
    for password in broker.passwords.values():
        assert password not in text
    assert passwd.stat().st_mode & 0o077 == 0
